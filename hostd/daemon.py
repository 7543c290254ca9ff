"""``hostd serve``: the host plus gunicorn, as one supervised tree.

hostd's own process is the top of the tree: it runs the :class:`~hostd.host.Host`
(store, sandboxes, broker, ingest, delivery) and starts gunicorn as one more
supervised child; it never lives inside gunicorn's master or workers. Signal
handlers only record the signal; the main loop acts on it.
"""
from __future__ import annotations

import http.client
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .config import Config
from .host import Host

__all__ = ["Daemon", "free_port"]

log = logging.getLogger("insights.daemon")


def free_port(host: str = "127.0.0.1") -> int:
    """:returns: a TCP port free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _pdeathsig():
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


class Daemon:
    """Runs a host and its web server until SIGTERM/SIGINT.

    :param config: the effective configuration.
    :param out: where the dashboard URL is announced.
    """

    def __init__(self, config: Config, out=sys.stdout):
        self.config = config
        self._out = out
        self._signal = None
        self._web: subprocess.Popen | None = None
        self.port = config["server.port"] or free_port(config["server.bind"])

    def _on_signal(self, signum, frame):
        self._signal = signum

    def _start_web(self, host: Host) -> None:
        root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ, INSIGHTS_RUNTIME=str(host.paths.runtime_file),
                   PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        timeout = int(max(host.config["limits.call_timeout_s"], host.config["limits.realtime_timeout_s"]) + 30)
        command = [sys.executable, "-m", "gunicorn", "--config", "python:hostd.gunicorn_conf",
                   "--bind", f"{self.config['server.bind']}:{self.port}",
                   # Threads, so that slow clients cannot hold every worker (see read_body); no
                   # keep-alive, as with sync workers: HTTPHandler, say, never closes its connection.
                   "--workers", str(self.config["server.workers"]), "--worker-class", "gthread",
                   "--threads", str(self.config["server.threads"]), "--keep-alive", "0",
                   "--graceful-timeout", str(math.ceil(self.config["server.graceful_timeout_s"])),
                   "--timeout", str(timeout), "--log-level", "warning", "--error-logfile", "-",
                   "hostd.wsgi:application"]
        # stopped -> starting (web)
        self._web = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=_pdeathsig)

    def _web_ready(self, timeout_s: float = 30.0) -> bool:
        deadline = time.time() + timeout_s
        while time.time() < deadline and self._signal is None:
            if self._web.poll() is not None:
                return False
            try:
                conn = http.client.HTTPConnection(self.config["server.bind"], self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def run(self) -> int:
        """Serve until a signal; :returns: the exit status (0 after SIGTERM/SIGINT)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        host = Host(self.config)
        try:
            host.start()
            self._start_web(host)
            if self._web_ready():
                host.wait_ready(self.config["limits.start_timeout_s"])
                url = f"http://{self.config['server.bind']}:{self.port}/"
                print(f"Insights dashboard: {url}", file=self._out, flush=True)
            restarts = 0
            while self._signal is None:
                time.sleep(0.1)
                if self._web.poll() is not None and self._signal is None:
                    restarts += 1
                    log.error("web server exited with status %s; restarting", self._web.returncode)
                    time.sleep(min(0.5 * 2 ** restarts, 30))
                    self._start_web(host)
            log.info("stopping on signal %s", self._signal)
            return 0
        finally:
            self._stop_web()
            host.stop()

    def _stop_web(self) -> None:
        web = self._web
        if web is None or web.poll() is not None:
            return
        web.send_signal(signal.SIGTERM)  # gunicorn: stop accepting, finish in-flight requests
        try:
            web.wait(self.config["server.graceful_timeout_s"] + 5)
        except subprocess.TimeoutExpired:
            os.killpg(web.pid, signal.SIGKILL)
            web.wait()
