"""hostd's side of the fork server (:mod:`sandbox.forkserver`).

:class:`ForkServer` starts the pre-warmed parent and asks it for sandboxes;
each comes back as a :class:`ForkedProcess`, which offers what the supervisor
uses of ``subprocess.Popen`` (``pid``, ``poll``, ``wait``, ``send_signal``,
``kill``). Exit statuses arrive from the fork server, which reaps its children.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["ForkServer", "ForkedProcess"]


class ForkedProcess:
    """A sandbox forked by the fork server, seen like a ``Popen``."""

    def __init__(self, server: "ForkServer", pid: int):
        self._server = server
        self.pid = pid
        self.returncode = None

    def poll(self):
        """:returns: the exit status, or None while it runs."""
        if self.returncode is None:
            self.returncode = self._server.status_of(self.pid)
        return self.returncode

    def wait(self, timeout=None):
        """Wait for the exit. :raises subprocess.TimeoutExpired: still running after ``timeout``."""
        deadline = None if timeout is None else time.time() + timeout
        while self.poll() is None:
            if deadline is not None and time.time() > deadline:
                raise subprocess.TimeoutExpired(f"sandbox {self.pid}", timeout)
            self._server.wait_for_news(0.05)
        return self.returncode

    def send_signal(self, signum) -> None:
        """Signal the sandbox (ignored once it has exited)."""
        if self.poll() is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """Starts the pre-warmed parent and spawns sandboxes through it.

    :param socket_path: where it listens (a private folder).
    :param env: its environment (as a sandbox's, without per-module values).
    """

    def __init__(self, socket_path: Path, env: dict):
        self._path = str(socket_path)
        if os.path.exists(self._path):
            os.unlink(self._path)
        # -P: not hostd's working folder first on sys.path (a checkout there would shadow the
        # installed runtime, and confined sandboxes cannot see it)
        self.process = subprocess.Popen([sys.executable, "-P", "-m", "sandbox.forkserver", self._path],
                                        env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        self._sock = self._connect(time.time() + 60)
        self._lock = threading.Lock()       # one spawn at a time
        self._news = threading.Condition()
        self._statuses: dict = {}
        self._replies: list = []
        self._reader = threading.Thread(target=self._read, name="insights-forkserver", daemon=True)
        self._reader.start()

    def _connect(self, deadline: float) -> socket.socket:
        """Connect once the server listens (its socket file appears at bind, before listen)."""
        while True:
            if self.process.poll() is not None or time.time() > deadline:
                raise RuntimeError("the fork server did not start")
            if os.path.exists(self._path):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(self._path)
                    return sock
                except ConnectionRefusedError:
                    sock.close()
            time.sleep(0.01)

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                data = b""
            with self._news:
                if not data:
                    self._replies.append({"gone": True})
                    self._news.notify_all()
                    return
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    message = json.loads(line)
                    if "exit" in message:
                        self._statuses[message["exit"]] = message["status"]
                    else:
                        self._replies.append(message)
                self._news.notify_all()

    def spawn(self, spec_path: str, env: dict, cwd: str, log_fd: int) -> ForkedProcess:
        """Fork a sandbox running ``spec_path``. :raises RuntimeError: the fork server is gone."""
        with self._lock:
            request = json.dumps({"spec": spec_path, "env": env, "cwd": cwd}).encode() + b"\n"
            socket.send_fds(self._sock, [request], [log_fd])
            with self._news:
                while not self._replies:
                    if not self._news.wait(30):
                        raise RuntimeError("the fork server did not answer")
                reply = self._replies.pop(0)
        if "pid" not in reply:
            raise RuntimeError("the fork server is gone")
        return ForkedProcess(self, reply["pid"])

    def status_of(self, pid: int):
        """:returns: the exit status of a forked sandbox, or None while it runs."""
        with self._news:
            if pid in self._statuses:
                return self._statuses[pid]
        if self.process.poll() is not None:
            return -signal.SIGKILL  # the fork server died: its children died with it
        return None

    def wait_for_news(self, timeout: float) -> None:
        """Block until the fork server reports something (or ``timeout``)."""
        with self._news:
            self._news.wait(timeout)

    @property
    def alive(self) -> bool:
        """Whether the fork server still runs."""
        return self.process.poll() is None

    def stop(self) -> None:
        """Close the channel and stop the fork server."""
        try:
            self._sock.close()
        except OSError:
            pass
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
