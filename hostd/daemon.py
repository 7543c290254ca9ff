"""``hostd serve``: the host plus gunicorn, as one supervised tree.

hostd's own process is the top of the tree: it runs the :class:`~hostd.host.Host`
(store, sandboxes, broker, ingest, delivery) and starts gunicorn as one more
supervised child; it never lives inside gunicorn's master or workers. Signal
handlers only record the signal; the main loop acts on it.

hostd binds the HTTP port itself, before anything else starts, and hands the
listening socket to gunicorn (``--bind fd://N``): a port that is taken is a
clear error at once, nobody can take the port while gunicorn restarts, and the
health check that precedes the dashboard URL can only reach our own server.
"""
from __future__ import annotations

import errno
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

from .auth import check_bind
from .config import Config
from .host import Host
from .metrics import MULTIPROC_ENV, prepare_multiproc_dir

__all__ = ["Daemon", "PortUnavailable", "listen"]

log = logging.getLogger("insights.daemon")


class PortUnavailable(Exception):
    """The HTTP server's address cannot be bound (the message says why and what to do)."""


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """Bind and listen on ``host``:``port`` (port 0: a free one).

    :returns: the listening socket.
    :raises PortUnavailable: the port is in use, or the address is not one of this machine.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise PortUnavailable(f"cannot listen on {host!r}: {err.strerror}; check --bind") from err
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn: TIME_WAIT is no obstacle
        sock.bind(address)
        sock.listen(backlog)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise PortUnavailable(f"port {port} on {host} is already in use by another program: stop it, or"
                                  f" start hostd on another port with --port (--port 0 picks a free one)") from err
        raise PortUnavailable(f"cannot listen on {host} port {port}: {err.strerror}; check --bind and --port") from err
    return sock


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
        self._listener: socket.socket | None = None
        self._metrics_dir: str | None = None  # the web workers' shared metric files, emptied at each start
        self.port = config["server.port"]  # the actual one once bound (when 0 was asked for)

    def _on_signal(self, signum, frame):
        self._signal = signum

    def _start_web(self, host: Host) -> None:
        root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ, INSIGHTS_RUNTIME=str(host.paths.runtime_file), **{MULTIPROC_ENV: self._metrics_dir},
                   PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        timeout = int(max(host.config["limits.call_timeout_s"], host.config["limits.realtime_timeout_s"]) + 30)
        # run from hostd's private folder: its working folder (a checkout, say) stays off the
        # workers' path, which gunicorn would otherwise put first
        command = [sys.executable, "-P", "-m", "gunicorn", "--config", "python:hostd.gunicorn_conf",
                   "--chdir", str(host.paths.run), "--bind", f"fd://{self._listener.fileno()}",
                   # Threads, so that slow clients cannot hold every worker (see read_body); no
                   # keep-alive, as with sync workers: HTTPHandler, say, never closes its connection.
                   "--workers", str(self.config["server.workers"]), "--worker-class", "gthread",
                   "--threads", str(self.config["server.threads"]), "--keep-alive", "0",
                   "--graceful-timeout", str(math.ceil(self.config["server.graceful_timeout_s"])),
                   "--timeout", str(timeout), "--log-level", "warning", "--error-logfile", "-",
                   "hostd.wsgi:application"]
        # stopped -> starting (web)
        self._web = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                                     cwd=host.paths.run,
                                     pass_fds=[self._listener.fileno()], preexec_fn=_pdeathsig)

    def _web_ready(self, patience_s: float = 30.0) -> bool:
        """Wait until the web server answers ``/healthz``.

        :returns: True once it does; False if it exited first or a signal came.
        """
        warn_at = time.time() + patience_s
        while self._signal is None and self._web.poll() is None:
            conn = http.client.HTTPConnection(self.config["server.bind"], self.port, timeout=2)
            try:
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return True
            except OSError:
                pass
            finally:
                conn.close()
            if warn_at and time.time() > warn_at:
                log.warning("the web server has not answered for %g s; still waiting", patience_s)
                warn_at = None
            time.sleep(0.05)
        return False

    def run(self) -> int:
        """Serve until a signal.

        :returns: the exit status: 0 after SIGTERM/SIGINT, 1 when the web server never started.
        :raises ConfigError: the ``[auth]`` settings would serve everyone, or no one (nothing was started).
        :raises PortUnavailable: the HTTP port cannot be bound (nothing was started).
        """
        check_bind(self.config)
        self._listener = listen(self.config["server.bind"], self.port)
        self.port = self._listener.getsockname()[1]
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        host = Host(self.config)
        try:
            host.start()
            self._metrics_dir = prepare_multiproc_dir(host.paths.run / "metrics")
            self._start_web(host)
            if not self._web_ready():
                if self._signal is not None:
                    return 0
                log.error("the web server exited with status %s before it answered; stopping",
                          self._web.returncode)
                return 1
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
            self._listener.close()
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
