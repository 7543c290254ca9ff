"""gunicorn settings hostd always applies (``--config python:hostd.gunicorn_conf``).

The master dies with hostd (PR_SET_PDEATHSIG set when hostd spawns it), but a
forked worker does not inherit that: without this hook, workers of a SIGKILLed
hostd would go on answering on its port until their next heartbeat.

``child_exit`` tidies the workers' shared metric files (see ``hostd.metrics``).
"""
import ctypes
import os
import signal

from prometheus_client import multiprocess


def post_fork(server, worker):
    """In each new worker: die with the master."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != server.pid:  # the master died before the prctl
        os._exit(1)


def child_exit(server, worker):
    """In the master, once a worker exited: drop its live-gauge files (``/metrics``).

    Its counters and histograms stay in the folder, so totals survive a worker's restart.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
