"""gunicorn settings hostd always applies (``--config python:hostd.gunicorn_conf``).

The master dies with hostd (PR_SET_PDEATHSIG set when hostd spawns it), but a
forked worker does not inherit that: without this hook, workers of a SIGKILLed
hostd would go on answering on its port until their next heartbeat.
"""
import ctypes
import os
import signal


def post_fork(server, worker):
    """In each new worker: die with the master."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != server.pid:  # the master died before the prctl
        os._exit(1)

