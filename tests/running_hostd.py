"""A real ``hostd serve`` for end-to-end tests: start it, talk to it, stop it cleanly.

Shared by the test files that need a daemon; plain helpers, not fixtures, so each
file chooses its own scope.
"""
from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

HTTP_TIMEOUT_S = 30


def free_port() -> int:
    """:returns: a TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout_s: float = 30.0, interval_s: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy. :returns: that value."""
    deadline = time.time() + timeout_s
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what} (last: {last!r})")


class HttpClient:
    """HTTP calls to the daemon at ``self.base``, with a timeout unless one is given, and
    ``self.token`` as a bearer token unless other ``headers`` are given."""

    base: str
    token: str | None = None

    def request(self, method, path, **kwargs):
        kwargs.setdefault("timeout", HTTP_TIMEOUT_S)
        if self.token is not None:
            kwargs.setdefault("headers", {"Authorization": f"Bearer {self.token}"})
        return requests.request(method, self.base + path, **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)

    def put(self, path, **kwargs):
        return self.request("PUT", path, **kwargs)


class Daemon(HttpClient):
    """A running ``hostd serve`` (``base`` is its URL; ``token``, if any, goes with every request)."""

    def __init__(self, process, base, log_path, data_dir, token=None):
        self.process, self.base, self.log_path, self.data_dir = process, base, log_path, data_dir
        self.token = token
        #: the folder :func:`stop_daemon` removes
        self.removed_dir = data_dir

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def modules(self) -> dict:
        response = self.get("/modules")
        assert response.status_code == 200, response.text
        return response.json()

    def query(self, name, **params):
        response = self.post(f"/query/{name}", json=params)
        assert response.status_code == 200, (name, response.status_code, response.text)
        return response.json()

    def recorded(self, ids, timeout_s: float = 30.0) -> dict:
        """Wait until ``prop_recorder`` received every event of ``ids``. :returns: ``{id: record}``."""
        ids = list(ids)

        def arrived():
            found = {r["id"]: r for r in self.query("recorded", ids=ids)}
            return found if len(found) == len(set(ids)) else None
        return wait_until(arrived, timeout_s, what=f"{len(ids)} events recorded")

    def is_new(self, event) -> bool:
        """POST ``event`` to ``/event``: whether it was new to the log (so not stored before)."""
        response = self.post("/event", json=event)
        assert response.status_code in (200, 202), response.text
        body = response.json()
        assert body["accepted"] + body["duplicates"] == 1, body
        return body["accepted"] == 1


def launch(tmp, data_dir, config, modules_dir, args=(), account=None) -> tuple[subprocess.Popen, str, Path]:
    """Start ``hostd serve`` on a free port, its output going to ``tmp/hostd.log``.

    :param args: more command-line arguments (``["--mongo-url", url]``...).
    :param account: a :class:`unprivileged.Account` to run hostd as (with its own
        interpreter, from its folder ``data_dir.parent``), or None for this user.
    :returns: ``(process, base URL, log path)``; see :func:`wait_announced`.
    """
    port = free_port()
    log_path = tmp / "hostd.log"
    python, options = sys.executable, {"cwd": tmp}
    if account is not None:
        python, options = account.python, account.popen_kwargs(Path(data_dir).parent)
    command = [python, "-c", "from hostd.cli import main; main()", "serve", "--data-dir", str(data_dir),
               "--port", str(port), "--config", str(config), "--modules", str(modules_dir), *args]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                   **options)
    return process, f"http://127.0.0.1:{port}", log_path


def wait_announced(process: subprocess.Popen, log_path: Path, timeout_s: float = 60.0) -> None:
    """Wait for the dashboard URL in the log. :raises AssertionError: hostd exited or stayed silent."""
    def announced():
        log = log_path.read_text(errors="replace")
        if process.poll() is not None:
            raise AssertionError(f"hostd exited with {process.returncode}:\n{log}")
        return re.search(r"Insights dashboard: (http://\S+)", log)
    wait_until(announced, timeout_s, what="the dashboard URL in the log")


def start_daemon(tmp, modules_dir: Path, running: set, failed: set, server: str = "", more: str = "",
                 token: str | None = None, mongo_url: str | None = None, account=None,
                 limits: str = "") -> Daemon:
    """Start ``hostd serve --modules modules_dir`` and wait until every module settled.

    Its data dir is a short temporary folder (unix socket paths are short), removed
    by :func:`stop_daemon`; its config and log go to ``tmp``. Run as ``account``, the
    data dir and the config are in a folder of that user's instead (``tmp`` may be
    closed to it); ``modules_dir`` must be readable by it.

    :param server: more lines of the config's ``[server]`` section.
    :param more: more sections of the config (``[auth]``, ``[[auth.tokens]]``...).
    :param limits: more lines of the config's ``[limits]`` section.
    :param token: a bearer token sent with every request of the daemon object (it needs
        the ``admin`` scope when tokens are required: the readiness checks read ``/modules``).
    :param mongo_url: the store to use (``--mongo-url``), e.g. another daemon's ``store.url``.
    :param account: a :class:`unprivileged.Account` to run hostd as.
    """
    if account is None:
        data_dir = Path(tempfile.mkdtemp(prefix="insights-e2e-"))
        config, removed = tmp / "hostd.toml", data_dir
    else:
        removed = account.private_dir("insights-e2e-")
        data_dir, config = removed / "data", removed / "hostd.toml"
    config.write_text(f"[server]\nworkers = 2\n{server}\n[limits]\ncall_timeout_s = 10\n{limits}\n"
                      f"[supervisor]\nbackoff_initial_s = 0.2\n\n{more}", encoding="utf-8")
    if account is not None:
        data_dir.mkdir()
        account.own(removed)
    args = ["--mongo-url", mongo_url] if mongo_url else []
    process, base, log_path = launch(tmp, data_dir, config, modules_dir, args, account)
    daemon = Daemon(process, base, log_path, data_dir, token)
    daemon.removed_dir = removed
    try:
        wait_announced(process, log_path)
        wanted = {**{m: "running" for m in running}, **{m: "failed" for m in failed}}
        wait_until(lambda: {n: e["state"] for n, e in daemon.modules().items()} == wanted, 60,
                   what=f"modules settled as {wanted}")
        counts = {state: n for state, n in (("running", len(running)), ("failed", len(failed))) if n}
        wait_until(lambda: daemon.get("/healthz").json()["modules"] == counts, 30, what="the web workers' table")
    except BaseException:
        stop_daemon(daemon)
        raise
    return daemon


def stop_daemon(daemon: Daemon) -> None:
    """SIGTERM; the daemon must exit 0 and leave no child behind."""
    try:
        children = psutil.Process(daemon.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    daemon.process.send_signal(signal.SIGTERM)
    try:
        status = daemon.process.wait(30)
    except subprocess.TimeoutExpired:
        daemon.process.kill()
        daemon.process.wait()
        status = "killed after 30 s"
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        child.kill()
    shutil.rmtree(daemon.removed_dir, ignore_errors=True)
    assert status == 0, f"hostd exited with {status}:\n{daemon.log()[-5000:]}"
    assert not alive, f"children left after hostd exited: {[c.pid for c in alive]}"
