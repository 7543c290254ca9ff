"""A pre-warmed parent that forks sandboxes: imports are paid once, pages shared.

Started by hostd as a fresh interpreter (``python -m sandbox.forkserver SOCKET``),
it imports the heavy shared libraries and the sandbox runtime, then serves one
unix socket. It holds no threads, no ZeroMQ context and no module code: each
child makes its own context after the fork, like multiprocessing's forkserver
with preload.

Requests (one JSON line, with the child's log file descriptor attached by
SCM_RIGHTS): ``{"spec": PATH, "env": {...}, "cwd": DIR}`` → ``{"pid": N}``.
When a child exits, ``{"exit": N, "status": S}`` is sent (``S`` like
``Popen.returncode``: negative for a signal). The fork server dies with hostd.
"""
from __future__ import annotations

import ctypes
import json
import os
import selectors
import signal
import socket
import sys

__all__ = ["serve", "PRELOAD"]

#: imported before any fork, so children share them
PRELOAD = ("numpy", "pymongo", "bson", "zmq", "msgpack", "sandbox.runtime", "sandbox.loader",
           "sandbox.properties", "mongoquery")
#: the confinement layers' bindings (each child applies them; pyseccomp also needs libseccomp)
PRELOAD_IF_PRESENT = ("landlockpy", "pyseccomp")


def _status(raw: int) -> int:
    return -os.WTERMSIG(raw) if os.WIFSIGNALED(raw) else os.WEXITSTATUS(raw)


def _child(conn: socket.socket, listener: socket.socket, request: dict, log_fd: int) -> None:
    """In the forked child: become the sandbox. Never returns."""
    status = 1
    try:
        listener.close()
        conn.close()
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.environ.clear()
        os.environ.update(request.get("env") or {})
        os.chdir(request.get("cwd") or "/")
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        from sandbox.runtime import main
        status = main([request["spec"]])
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def serve(path: str) -> None:
    """Serve spawn requests on the unix socket ``path`` until hostd goes away."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # die with hostd
    parent = os.getppid()
    for name in PRELOAD:
        __import__(name)
    for name in PRELOAD_IF_PRESENT:  # sandbox.confine reports them missing; the fork server still serves
        try:
            __import__(name)
        except (ImportError, OSError, RuntimeError):
            pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(1)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    conn, _ = listener.accept()  # hostd, the only client
    selector = selectors.DefaultSelector()
    selector.register(conn, selectors.EVENT_READ, "request")
    selector.register(wake_r, selectors.EVENT_READ, "signal")
    buffer = b""
    while os.getppid() == parent:
        for key, _ in selector.select(1.0):
            if key.data == "signal":
                os.read(wake_r, 4096)
                continue
            data, fds, _, _ = socket.recv_fds(conn, 65536, 4)
            if not data:
                return  # hostd closed the channel
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(conn, listener, request, fds[0])
                for fd in fds:
                    os.close(fd)
                fds = []
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        while True:  # reap and report
            try:
                pid, raw = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn.sendall(json.dumps({"exit": pid, "status": _status(raw)}).encode() + b"\n")


if __name__ == "__main__":
    serve(sys.argv[1])
