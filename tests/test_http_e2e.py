"""End-to-end tests: a real ``hostd serve`` process, spoken to over HTTP.

One daemon is started per test module (module-scoped fixture) with the bundled
``contrib_modules`` and the test modules of ``tests/modules``:

* ``e2e_probe``: one query per injected name, typed parameters, a handler that
  keeps every event it receives, and endpoints that raise, sleep or kill their
  own sandbox;
* ``e2e_bad_import``: raises at import, so it must be shown as failed.

The daemon's config makes calls time out after 3 s and restarts quick, so the
whole file runs in well under a minute. Tests poll with short sleeps and never
assert on timings. Each test uses its own event content (a uuid), so they do not
depend on each other's order.
"""
from __future__ import annotations

import hashlib
import html
import http.client
import json
import logging
import logging.handlers
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import psutil
import pymongo
import pytest
from pymongo.uri_parser import parse_uri

from running_hostd import HttpClient, wait_until
from sandbox.transport import batch_policy_allowed

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[1]
CONTRIB = REPO / "contrib_modules"
TEST_MODULES = Path(__file__).resolve().parent / "modules"
EXPECTED_FAILED = {"e2e_bad_import"}
ALL_MODULES = {"dump_to_db", "event_count", "grades", "hello", "e2e_probe", "e2e_bad_import"}
MAX_BODY_MB = 1
CALL_TIMEOUT_S = 3
HTTP_TIMEOUT_S = 30
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- helpers ----------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _hostd_command(data_dir, port, config, modules) -> list[str]:
    command = [sys.executable, "-c", "from hostd.cli import main; main()", "serve",
               "--data-dir", str(data_dir), "--port", str(port), "--config", str(config)]
    for folder in modules:
        command += ["--modules", str(folder)]
    return command


def event_identity(event: dict) -> str:
    """The identity SPEC §3 gives an event without ``id``: SHA-256 of its canonical JSON."""
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _gone(pid: int) -> bool:
    """:returns: whether process ``pid`` no longer runs (a zombie counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_error(response, status: int, code: str | None = None) -> dict:
    """Check an error answer: the status and the ``{"error": {"code", "message"}}`` body."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"], body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


class Daemon(HttpClient):
    """A running ``hostd serve`` and the HTTP calls the tests make to it."""

    def __init__(self, process, base, data_dir, log_path, port):
        self.process = process
        self.base = base
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = port

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def post_events(self, body):
        """POST ``body`` (JSON-encoded here unless already bytes/str) to ``/event``."""
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return self.post("/event", data=data, headers={"Content-Type": "application/json"})

    def modules(self) -> dict:
        response = self.get("/modules")
        assert response.status_code == 200, response.text
        return response.json()

    def module(self, name) -> dict:
        return self.modules()[name]

    def wait_running(self, name, timeout_s: float = 40.0) -> dict:
        """:returns: the ``/modules`` entry of ``name`` once it is running."""
        def running():
            entry = self.module(name)
            return entry if entry["state"] == "running" else None
        return wait_until(running, timeout_s, what=f"module {name} running")

    def call(self, kind, name, params=None, method="GET", timeout_s: float = 40.0):
        """Call a view or query, waiting out a restart of its module first.

        A restart shows as 503 (not running) and, for up to one publication of the
        module table (0.1 s) after a sandbox died, as 502 (the web workers still
        have the dead process's record); both are retried until ``timeout_s``.
        """
        def attempt():
            if method == "GET":
                response = self.get(f"/{kind}/{name}", params=params)
            else:
                response = self.post(f"/{kind}/{name}", json=params)
            # a tuple, since an error Response is falsy
            return None if response.status_code in (502, 503) else (response,)
        return wait_until(attempt, timeout_s, interval_s=0.1, what=f"{kind} {name} answering")[0]

    def query(self, name, **params):
        """:returns: the JSON result of a query that must succeed."""
        response = self.call("query", name, params)
        assert response.status_code == 200, (name, params, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/json")
        return response.json()

    def view(self, name, **params) -> str:
        """:returns: the HTML of a view that must succeed."""
        response = self.call("view", name, params)
        assert response.status_code == 200, (name, params, response.status_code, response.text)
        assert response.headers["content-type"].startswith("text/html")
        return response.text

    def raw_get(self, path: str):
        """GET ``path`` byte for byte (no client-side ``..`` normalisation). :returns: (status, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT_S)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def seen_count(self, kind: str) -> int:
        return self.query("seen_count", kind=kind)

    def dumped(self) -> list[dict]:
        return self.query("dumped_events", limit=1000)


@pytest.fixture(scope="module")
def hostd(tmp_path_factory):
    """A real ``hostd serve`` with the contrib and test modules, stopped (and checked) at the end."""
    tmp = tmp_path_factory.mktemp("hostd_e2e")
    data_dir = tmp / "data"
    config = tmp / "hostd.toml"
    config.write_text(f"[limits]\ncall_timeout_s = {CALL_TIMEOUT_S}\nmax_body_mb = {MAX_BODY_MB}\n\n"
                      "[supervisor]\nbackoff_initial_s = 0.2\n", encoding="utf-8")
    port = _free_port()
    log_path = tmp / "hostd.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(_hostd_command(data_dir, port, config, [CONTRIB, TEST_MODULES]),
                                   stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                   cwd=tmp)
    daemon = Daemon(process, f"http://127.0.0.1:{port}", data_dir, log_path, port)
    try:
        def announced():
            if process.poll() is not None:
                raise AssertionError(f"hostd exited with {process.returncode}:\n{daemon.log()}")
            return re.search(r"Insights dashboard: (http://\S+)", daemon.log())
        match = wait_until(announced, 60, what="the dashboard URL in the log")
        assert match.group(1) == f"http://127.0.0.1:{port}/"

        def settled():
            states = {name: entry["state"] for name, entry in daemon.modules().items()}
            expected = {name: "failed" if name in EXPECTED_FAILED else "running" for name in states}
            return states if states == expected else None
        states = wait_until(settled, 60, what="every module running")
        assert set(states) >= ALL_MODULES, states
        # /modules asks the host; the web workers read the module table it publishes
        # (every 0.1 s): wait until they see the same states too.
        wanted = {"running": len(states) - len(EXPECTED_FAILED), "failed": len(EXPECTED_FAILED)}
        wait_until(lambda: daemon.get("/healthz").json()["modules"] == wanted, 30,
                   what="the web workers' module table")
        yield daemon
    finally:
        _stop_daemon(daemon)


def _stop_daemon(daemon: Daemon) -> None:
    """SIGTERM; the daemon must exit 0 and leave no child process behind."""
    process = daemon.process
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    process.send_signal(signal.SIGTERM)
    try:
        status = process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        for child in children:
            try:
                child.kill()
            except psutil.Error:
                pass
        raise AssertionError(f"hostd did not exit within 30 s of SIGTERM:\n{daemon.log()[-5000:]}")
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        child.kill()
    assert status == 0, f"hostd exited with {status}:\n{daemon.log()[-5000:]}"
    assert not alive, f"children left after hostd exited: {[c.pid for c in alive]}"
    assert children, "hostd had no child process (store, web server, sandboxes)?"
    # The embedded store is stopped and its URL withdrawn.
    assert not (daemon.data_dir / "store.url").exists()


# -- 1. pages ---------------------------------------------------------------

def test_healthz_dashboard_and_schema(hostd):
    health = hostd.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"

    page = hostd.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    text = page.text
    for module in ALL_MODULES:
        assert f'id="module-{module}"' in text
    for view in ("hello_world", "hello_user", "plot_grades", "user_count_view", "event_count_view",
                 "probe_view"):
        assert f'id="view-{view}"' in text
    # Views without required parameters load by themselves; the others wait for their form.
    assert re.search(r'id="view-hello_world"[^>]*data-autoload', text)
    assert not re.search(r'id="view-hello_user"[^>]*data-autoload', text)
    failed_section = text.split('id="module-e2e_bad_import"', 1)[1].split("<section", 1)[0]
    assert 'class="state module-state state-failed">failed' in failed_section

    schema = hostd.get("/schema")
    assert schema.status_code == 200
    assert schema.headers["content-type"].startswith("application/json")
    entries = schema.json()
    assert isinstance(entries, list) and entries
    for entry in entries:
        assert set(entry) == {"class", "name", "module", "params", "category", "doc", "node", "aliases"}, entry
        assert entry["node"] == "local"
        assert entry["class"] in ("view", "query")
        assert entry["module"] != "e2e_bad_import"
    by_name = {(e["class"], e["name"]): e for e in entries}
    assert text.count("<iframe") == sum(1 for kind, _ in by_name if kind == "view")  # one per view
    grades = by_name[("query", "get_grades")]
    assert grades["module"] == "grades"
    assert grades["params"] == [{"name": "course", "type": "str", "required": True, "default": None}]
    assert grades["category"] == "course"
    assert grades["doc"].startswith("Simulated grades of a course")
    assert by_name[("view", "hello_world")]["category"] == ""
    assert by_name[("view", "hello_world")]["doc"] == "Greet the world."
    typed = by_name[("query", "typed")]
    assert typed["category"] == "i+f+b+tags+s"
    assert [(p["name"], p["type"], p["required"], p["default"]) for p in typed["params"]] == [
        ("i", "int", True, None), ("f", "float", True, None), ("b", "bool", True, None),
        ("tags", "list[str]", True, None), ("s", "str", False, "d")]
    for alias in ("three_name", "edx_three_name", "edx.three_name"):
        assert by_name[("query", alias)]["module"] == "event_count"
    # handlers are not part of the schema
    assert ("query", "collect") not in by_name and ("handler", "collect") not in by_name

    page = hostd.get("/schema", params={"f": "html"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "get_grades" in page.text and "hello_user" in page.text and "<table" in page.text


# -- 2. views and queries -----------------------------------------------------

def test_views_and_queries(hostd):
    assert hostd.view("hello_world") == "<html>Hello world!</html>"
    assert hostd.view("hello_user", user="bob") == "<html>Hello bob</html>"
    escaped = hostd.view("hello_user", user="<script>alert(1)</script>")
    assert "<script>" not in escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in escaped

    grades = hostd.query("get_grades", course="x")
    assert len(grades) == 1000
    assert all(len(row) == 4 and all(isinstance(v, float) for v in row) for row in grades)
    mean = sum(sum(row) for row in grades) / 4000
    assert 69 < mean < 71
    assert hostd.query("get_grades", course="x") == grades          # stable per course
    assert hostd.query("get_grades", course="y") != grades

    posted = hostd.call("query", "get_grades", {"course": "x"}, method="POST")
    assert posted.status_code == 200, posted.text
    assert posted.json() == grades

    for name in ("three_name", "edx_three_name", "edx.three_name"):
        assert hostd.query(name) == "I have three names"
    assert hostd.query("check_three_name") == "Works"


# -- 3. the file store over /fs ------------------------------------------------

def _sign(hostd, module: str, name: str, expires: int) -> str:
    """Sign like the module would, with the key hostd derives from the data dir."""
    from hostd.keys import module_fs_key
    from sandbox.filestore import sign_path
    master = bytes.fromhex((hostd.data_dir / "fs.key").read_text().strip())
    return sign_path(module_fs_key(master, module), module, name, expires)


def test_plot_and_signed_file_urls(hostd):
    page = hostd.view("plot_grades", course="6.002x")
    assert "Grades of 6.002x" in page
    src = html.unescape(re.search(r'<img src="([^"]+)"', page).group(1))
    match = re.fullmatch(r"/fs/grades/(grades-6_002x-[0-9a-f]{8}\.png)\?expires=(\d+)&sig=([0-9a-f]{64})", src)
    assert match, src
    filename, expires, sig = match.group(1), int(match.group(2)), match.group(3)
    assert expires > time.time()

    image = hostd.get(src)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content.startswith(PNG_MAGIC)
    assert int(image.headers["content-length"]) == len(image.content) > 1000

    tampered = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    assert_error(hostd.get(f"/fs/grades/{filename}?expires={expires}&sig={tampered}"), 403, "forbidden")
    assert_error(hostd.get(f"/fs/grades/{filename}?expires={expires + 1}&sig={sig}"), 403, "forbidden")
    assert_error(hostd.get(f"/fs/grades/{filename}"), 403, "forbidden")
    assert_error(hostd.get(f"/fs/grades/{filename}?expires=abc&sig={sig}"), 403, "forbidden")
    # another module's name with this signature: keys are per module
    assert_error(hostd.get(f"/fs/hello/{filename}?expires={expires}&sig={sig}"), 403, "forbidden")
    # a past expiry, even correctly signed
    past = int(time.time()) - 10
    assert_error(hostd.get(f"/fs/grades/{filename}?expires={past}&sig={_sign(hostd, 'grades', filename, past)}"),
                 403, "forbidden")
    # sanity check of the signing helper: a correctly signed future URL works
    future = int(time.time()) + 600
    assert hostd.get(f"/fs/grades/{filename}?expires={future}&sig={_sign(hostd, 'grades', filename, future)}"
                     ).status_code == 200

    store_url = (hostd.data_dir / "store.url").read_text()
    for traversal in ("../../store.url", "%2e%2e/%2e%2e/store.url", "..%2f..%2fstore.url"):
        # with the signature of the real file, and with a valid signature of the traversal itself
        for query in (f"expires={expires}&sig={sig}",
                      f"expires={future}&sig={_sign(hostd, 'grades', '../../store.url', future)}"):
            status, body = hostd.raw_get(f"/fs/grades/{traversal}?{query}")
            assert status in (403, 404), (traversal, status, body)
            assert b"mongodb://" not in body and store_url.encode() not in body


def test_module_file_urls_from_fs(hostd):
    result = hostd.query("uses_fs")
    assert result["exists"] is True
    assert "probe.txt" in result["listdir"]
    assert re.fullmatch(r"/fs/e2e_probe/probe\.txt\?expires=\d+&sig=[0-9a-f]{64}", result["url"])
    served = hostd.get(result["url"])
    assert served.status_code == 200
    assert served.text == "probe contents"
    assert served.headers["content-type"].startswith("text/plain")


# -- 4. every injected name ----------------------------------------------------

def test_injected_names(hostd):
    stored = hostd.query("uses_db")
    assert stored == {"value": 41, "token_matches": True}
    assert hostd.query("uses_mongodb") == "mod_e2e_probe"
    assert hostd.query("db_name") == "mod_e2e_probe"
    assert hostd.query("uses_cache") == {"cached": [1, 2, 3]}
    assert hostd.query("uses_params") == {"a": 1, "params": {}}
    assert hostd.query("uses_params", a=7, extra="yes") == {"a": 7, "params": {"extra": "yes"}}
    assert hostd.query("uses_log") == "ok"
    probe_log = hostd.data_dir / "logs" / "e2e_probe.log"
    wait_until(lambda: "e2e probe says hello" in probe_log.read_text(errors="replace"), 10,
               what="the module's log line")


def test_cross_module_query_and_view(hostd):
    """``query.X`` / ``view.X`` of another module go through hostd's broker."""
    assert hostd.query("uses_query") == 1000
    assert hostd.query("uses_view") == "<html>Hello world!</html>"


# -- 5. injected names cannot be set by a request -------------------------------

def test_injection_cannot_be_overridden(hostd):
    assert hostd.query("db_name", db="evil", fs="x", mongodb="y") == "mod_e2e_probe"
    assert hostd.query("uses_mongodb", mongodb="evil", db="evil") == "mod_e2e_probe"
    posted = hostd.call("query", "db_name", {"db": "evil", "mongodb": "evil"}, method="POST")
    assert posted.status_code == 200 and posted.json() == "mod_e2e_probe"

    result = hostd.get("/query/uses_params?a=2&x=3&db=evil&params=evil&log=evil&emit=evil")
    assert result.status_code == 200, result.text
    assert result.json() == {"a": 2, "params": {"x": "3"}}
    posted = hostd.call("query", "uses_params", {"a": 5, "y": [1, 2], "db": "evil", "cache": 1,
                                                 "params": {"db": "evil"}}, method="POST")
    assert posted.status_code == 200, posted.text
    assert posted.json() == {"a": 5, "params": {"y": [1, 2]}}
    assert hostd.query("uses_cache", cache="evil") == {"cached": [1, 2, 3]}


# -- 6. errors ------------------------------------------------------------------

def test_unknown_and_bad_parameters(hostd):
    error = assert_error(hostd.get("/query/no_such_query"), 404, "not_found")
    assert "no_such_query" in error["message"]

    error = assert_error(hostd.call("query", "get_grades"), 400, "bad_parameter")
    assert "course" in error["message"]
    error = assert_error(hostd.call("query", "typed", {"f": 1, "b": "true", "tags": "a"}), 400)
    assert "'i'" in error["message"]
    error = assert_error(hostd.call("query", "typed", {"i": "abc", "f": 1, "b": "true", "tags": "a"}), 400,
                         "bad_parameter")
    assert "'i'" in error["message"] and "abc" in error["message"]
    error = assert_error(hostd.call("query", "typed", {"i": 1, "f": "x.y", "b": "1", "tags": "a"}), 400)
    assert "'f'" in error["message"]
    error = assert_error(hostd.call("query", "typed", {"i": 1, "f": 1, "b": "maybe", "tags": "a"}), 400)
    assert "'b'" in error["message"]
    error = assert_error(hostd.get("/query/typed?i=1&i=2&f=1&b=1&tags=a"), 400, "bad_parameter")
    assert "'i'" in error["message"]
    error = assert_error(hostd.call("query", "typed", {"i": [1, 2], "f": 1, "b": True, "tags": ["a"]},
                                    method="POST"), 400, "bad_parameter")
    assert "'i'" in error["message"]


def test_view_errors_are_json(hostd):
    """A view's errors are JSON like a query's, not HTML (nor an empty 415)."""
    error = assert_error(hostd.get("/view/no_such_view"), 404, "not_found")
    assert "no_such_view" in error["message"]
    error = assert_error(hostd.call("view", "hello_user"), 400, "bad_parameter")
    assert "user" in error["message"]


def test_bad_parameter_raised_by_the_module_is_400(hostd):
    """``raise BadParameter(...)`` in a module's own code is the caller's 400, naming the parameter."""
    error = assert_error(hostd.call("query", "dumped_events", {"limit": 0}), 400, "bad_parameter")
    assert "limit" in error["message"]
    error = assert_error(hostd.call("view", "plot_grades", {"course": " "}), 400, "bad_parameter")
    assert "course" in error["message"]


def test_invalid_query_body_is_json_error(hostd):
    response = hostd.post("/query/db_name", data="{not json", headers={"Content-Type": "application/json"})
    assert_error(response, 400)
    response = hostd.post("/query/db_name", data="[1, 2]", headers={"Content-Type": "application/json"})
    assert_error(response, 400)


def test_typed_conversions(hostd):
    result = hostd.query("typed", i="42", f="2.5", b="true", tags="solo")
    assert result == {"i": 42, "f": 2.5, "b": True, "tags": ["solo"], "s": "d"}
    for text, value in [("true", True), ("false", False), ("1", True), ("0", False), ("yes", True),
                        ("no", False), ("TRUE", True), ("No", False)]:
        assert hostd.query("typed", i=1, f=1, b=text, tags="a")["b"] is value, text
    repeated = hostd.get("/query/typed?i=-3&f=1e3&b=no&tags=a&tags=b&tags=c&s=given")
    assert repeated.status_code == 200, repeated.text
    assert repeated.json() == {"i": -3, "f": 1000.0, "b": False, "tags": ["a", "b", "c"], "s": "given"}
    posted = hostd.call("query", "typed", {"i": 5, "f": 0.5, "b": False, "tags": ["x", "y"]}, method="POST")
    assert posted.status_code == 200, posted.text
    assert posted.json() == {"i": 5, "f": 0.5, "b": False, "tags": ["x", "y"], "s": "d"}


def test_module_error_is_hidden_from_caller(hostd):
    before = hostd.wait_running("e2e_probe")
    response = hostd.call("query", "boom")
    error = assert_error(response, 500, "module_error")
    assert "secret-detail-xyz" not in response.text
    assert "Traceback" not in response.text
    assert "boom" in error["message"]

    def recorded():
        entry = hostd.module("e2e_probe")
        return entry if "secret-detail-xyz" in (entry["last_error"] or "") else None
    entry = wait_until(recorded, 10, what="the traceback in /modules")
    assert "Traceback" in entry["last_error"] and "ValueError" in entry["last_error"]
    # 7. a module that raises keeps its process, and the others are not affected
    assert entry["state"] == "running"
    assert entry["pid"] == before["pid"] and entry["restarts"] == before["restarts"]
    assert hostd.view("hello_world") == "<html>Hello world!</html>"
    assert hostd.query("db_name") == "mod_e2e_probe"
    assert "secret-detail-xyz" in (hostd.data_dir / "logs" / "e2e_probe.log").read_text(errors="replace")


def test_timeout_kills_and_restarts_the_module(hostd):
    before = hostd.wait_running("e2e_probe")
    response = hostd.call("query", "slow", {"seconds": 10})
    error = assert_error(response, 504, "timeout")
    assert "slow" in error["message"]

    def restarted():
        entry = hostd.module("e2e_probe")
        return entry if entry["state"] == "running" and entry["restarts"] > before["restarts"] else None
    entry = wait_until(restarted, 30, what="e2e_probe restarted after the timeout")
    assert entry["pid"] != before["pid"]
    assert _gone(before["pid"])
    assert hostd.query("slow", seconds=0.05) == 0.05
    assert hostd.view("hello_world") == "<html>Hello world!</html>"


def test_crash_during_call_is_502_then_module_comes_back(hostd):
    before = hostd.wait_running("e2e_probe")
    assert hostd.query("db_name") == "mod_e2e_probe"  # the web workers see the live sandbox
    before = hostd.wait_running("e2e_probe")
    assert_error(hostd.get("/query/die"), 502, "crashed")
    # Right after, the module is restarting (503), or the old record is still seen (502), or it
    # is back already (200); it must settle on 200.
    seen = []

    def answered():
        response = hostd.get("/query/db_name")
        seen.append(response.status_code)
        if response.status_code in (502, 503):
            assert_error(response, response.status_code, "crashed" if response.status_code == 502
                         else "not_running")
        return response if response.status_code == 200 else None
    response = wait_until(answered, 30, interval_s=0.02, what="e2e_probe answering again")
    assert set(seen) <= {200, 502, 503}, seen
    assert response.json() == "mod_e2e_probe"
    entry = hostd.wait_running("e2e_probe")
    assert entry["restarts"] > before["restarts"] and entry["pid"] != before["pid"]
    assert "exited with status 1" in (entry["last_error"] or "")


# -- 8. a sandbox killed from outside ---------------------------------------------

def test_killed_sandbox_is_restarted(hostd):
    before = hostd.wait_running("grades")
    assert hostd.query("get_grades", course="k")  # it serves before
    os.kill(before["pid"], signal.SIGKILL)

    def restarted():
        entry = hostd.module("grades")
        ok = entry["state"] == "running" and entry["pid"] != before["pid"] and entry["restarts"] >= 1
        return entry if ok else None
    entry = wait_until(restarted, 30, what="grades restarted")
    assert entry["restarts"] >= before["restarts"] + 1
    assert len(hostd.query("get_grades", course="k")) == 1000
    assert hostd.view("hello_world") == "<html>Hello world!</html>"


# -- 9. a module that does not import -----------------------------------------------

def test_bad_import_is_failed_with_traceback(hostd):
    entry = hostd.module("e2e_bad_import")
    assert entry["state"] == "failed"
    assert entry["pid"] is None
    assert "import-failure-marker" in entry["last_error"]
    assert "Traceback" in entry["last_error"] and "RuntimeError" in entry["last_error"]
    assert entry["restarts"] == 0  # a load failure is not retried
    assert_error(hostd.get("/query/never_defined"), 404, "not_found")
    others = hostd.modules()
    for name in ALL_MODULES - EXPECTED_FAILED:
        assert others[name]["state"] in ("running", "restarting", "starting"), others[name]
    assert hostd.view("hello_world") == "<html>Hello world!</html>"


# -- 10. events ----------------------------------------------------------------

def test_event_forms_are_accepted(hostd):
    tag = uuid.uuid4().hex
    single = {"kind": f"single-{tag}"}
    response = hostd.post_events(single)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0, "ids": [event_identity(single)]}

    listed = [{"kind": f"list-{tag}", "n": 1}, {"kind": f"list-{tag}", "n": 2, "id": f"given-{tag}"}]
    response = hostd.post_events(listed)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 2, "duplicates": 0,
                               "ids": [event_identity(listed[0]), f"given-{tag}"]}

    as_string = [{"kind": f"string-{tag}", "n": 1}, {"kind": f"string-{tag}", "n": 2}]
    response = hostd.post_events(json.dumps(json.dumps(as_string)))
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 2, "duplicates": 0, "ids": [event_identity(e) for e in as_string]}

    strings = [{"kind": f"strings-{tag}", "n": 1}, {"kind": f"strings-{tag}", "n": 2}]
    response = hostd.post_events([json.dumps(e) for e in strings])
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 2, "duplicates": 0, "ids": [event_identity(e) for e in strings]}

    # a duplicate inside one request: stored once
    twice = {"kind": f"twice-{tag}"}
    response = hostd.post_events([twice, twice])
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "duplicates": 1, "ids": [event_identity(twice)] * 2}

    expected = {f"single-{tag}": 1, f"list-{tag}": 2, f"string-{tag}": 2, f"strings-{tag}": 2,
                f"twice-{tag}": 1}
    for kind, count in expected.items():
        wait_until(lambda: hostd.seen_count(kind) == count, 30, what=f"{count} {kind} events handled")


def test_duplicate_event_is_processed_once(hostd):
    tag = uuid.uuid4().hex
    event = {"kind": f"dup-{tag}", "value": 1}
    first = hostd.post_events(event)
    assert first.status_code == 202 and first.json() == {"accepted": 1, "duplicates": 0,
                                                         "ids": [event_identity(event)]}
    second = hostd.post_events(event)
    assert second.status_code == 202 and second.json() == {"accepted": 0, "duplicates": 1,
                                                           "ids": [event_identity(event)]}
    # with an explicit id, other content does not matter
    third = hostd.post_events({"kind": f"dup-{tag}", "value": 2, "id": f"id-{tag}"})
    fourth = hostd.post_events({"kind": f"dup-{tag}", "value": 3, "id": f"id-{tag}"})
    assert third.json() == {"accepted": 1, "duplicates": 0, "ids": [f"id-{tag}"]}
    assert fourth.json() == {"accepted": 0, "duplicates": 1, "ids": [f"id-{tag}"]}

    marker = {"kind": f"dup-marker-{tag}"}
    assert hostd.post_events(marker).status_code == 202
    wait_until(lambda: hostd.seen_count(marker["kind"]) == 1, 30, what="the marker handled")
    assert hostd.seen_count(f"dup-{tag}") == 2


def test_bad_batch_is_rejected_whole(hostd):
    tag = uuid.uuid4().hex
    bad_kind = f"bad-{tag}"
    for body in ([{"kind": bad_kind}, 3], [{"kind": bad_kind}, "not json"], [{"kind": bad_kind}, [1]],
                 [{"kind": bad_kind}, None]):
        error = assert_error(hostd.post_events(body), 400, "bad_event")
        assert "item 1" in error["message"], error
        assert error.get("index") == 1, error
    for body in ("{not json", "", "[]", "3", '"just a string"'):
        assert_error(hostd.post_events(body), 400)

    marker = {"kind": f"after-bad-{tag}"}
    assert hostd.post_events(marker).status_code == 202
    wait_until(lambda: hostd.seen_count(marker["kind"]) == 1, 30, what="the marker handled")
    assert hostd.seen_count(bad_kind) == 0
    wait_until(lambda: marker in hostd.dumped(), 30, what="dump_to_db stored the marker")
    assert not [e for e in hostd.dumped() if e.get("kind") == bad_kind]
    # the first item alone was never stored: posting it now is new
    response = hostd.post_events({"kind": bad_kind})
    assert response.json()["accepted"] == 1


def test_logging_http_handler_records(hostd):
    """The form-encoded records of ``logging.handlers.HTTPHandler`` (GET and POST) are events."""
    tag = uuid.uuid4().hex
    by_method = {}
    for method in ("GET", "POST"):
        event = {"kind": f"logged-{tag}", "method": method}
        handler = logging.handlers.HTTPHandler(f"127.0.0.1:{hostd.port}", "/event", method=method)
        record = logging.LogRecord("insights.e2e", logging.INFO, __file__, 1, json.dumps(event), None, None)
        form = urllib.parse.urlencode(handler.mapLogRecord(record))
        if method == "GET":
            response = hostd.get(f"/event?{form}")
        else:
            response = hostd.post("/event", data=form,
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 202, response.text
        assert response.json() == {"accepted": 1, "duplicates": 0, "ids": [event_identity(event)]}
        by_method[method] = event
    # and the real handler, end to end
    sent = {"kind": f"logged-{tag}", "method": "handler"}
    logger = logging.getLogger(f"insights.e2e.{tag}")
    logger.propagate = False
    handler = logging.handlers.HTTPHandler(f"127.0.0.1:{hostd.port}", "/event", method="POST")
    logger.addHandler(handler)
    try:
        logger.warning(json.dumps(sent))
    finally:
        logger.removeHandler(handler)
        handler.close()
    wait_until(lambda: hostd.seen_count(f"logged-{tag}") == 3, 30, what="the three logged events")
    expected = [*by_method.values(), sent]
    wait_until(lambda: all(event in hostd.dumped() for event in expected), 30,
               what="dump_to_db stored the logged events")


def test_body_too_large_is_413(hostd):
    big = json.dumps({"kind": "big", "blob": "x" * (MAX_BODY_MB * 1024 * 1024 + 10)})
    assert_error(hostd.post_events(big), 413, "too_large")
    assert_error(hostd.post("/query/db_name", data=big, headers={"Content-Type": "application/json"}),
                 413, "too_large")
    assert hostd.seen_count("big") == 0


def test_event_reaches_every_handler(hostd):
    tag = uuid.uuid4().hex
    count_before = hostd.query("dumped_count")
    event = {"kind": f"both-{tag}", "username": f"user-{tag}"}
    assert hostd.post_events(event).status_code == 202
    wait_until(lambda: hostd.seen_count(event["kind"]) == 1, 30, what="e2e_probe.collect got it")
    wait_until(lambda: event in hostd.dumped(), 30, what="dump_to_db stored it")
    assert hostd.query("dumped_count") >= count_before + 1
    wait_until(lambda: hostd.query("user_event_count", user=f"user-{tag}") == 1, 30,
               what="event_count counted it")


def test_emitted_event_enters_the_stream(hostd):
    n = int(uuid.uuid4().int % 10**9)
    emitted = {"kind": "emitted", "n": n}
    ids = hostd.query("uses_emit", n=n)
    assert ids == [event_identity(emitted)]
    wait_until(lambda: emitted in hostd.dumped(), 30, what="dump_to_db stored the emitted event")
    # the emitting module does not get its own event back (its handler has no filter)
    marker = {"kind": f"after-emit-{n}"}
    assert hostd.post_events(marker).status_code == 202
    wait_until(lambda: hostd.seen_count(marker["kind"]) == 1, 30, what="the marker handled")
    assert hostd.seen_count("emitted") == 0


# -- 11. /modules ---------------------------------------------------------------

def test_modules_status(hostd):
    hostd.wait_running("e2e_probe")
    status = hostd.modules()
    assert set(status) >= ALL_MODULES
    for name, entry in status.items():
        for key in ("state", "pid", "restarts", "last_error", "lag", "handled", "dead_letters", "handlers"):
            assert key in entry, (name, key)
        assert entry["state"] in ("starting", "running", "restarting", "crashloop", "failed", "stopped")
        assert isinstance(entry["restarts"], int) and entry["restarts"] >= 0
        assert isinstance(entry["lag"], int) and entry["lag"] >= 0
        assert isinstance(entry["handled"], int) and entry["handled"] >= 0
        assert isinstance(entry["dead_letters"], int) and entry["dead_letters"] >= 0
        assert isinstance(entry["handlers"], dict)
    probe = status["e2e_probe"]
    assert isinstance(probe["pid"], int) and psutil.pid_exists(probe["pid"])
    assert set(probe["handlers"]) == {"collect"}
    assert set(status["event_count"]["handlers"]) >= {"count_events", "cache_set", "fs_event"}
    assert status["hello"]["handlers"] == {} and status["hello"]["handled"] == 0
    assert status["e2e_bad_import"]["handlers"] == {}

    tag = uuid.uuid4().hex
    assert hostd.post_events({"kind": f"status-{tag}"}).status_code == 202
    wait_until(lambda: hostd.seen_count(f"status-{tag}") == 1, 30, what="the event handled")

    def caught_up():
        entry = hostd.module("e2e_probe")
        return entry if entry["lag"] == 0 and entry["handled"] >= 1 else None
    entry = wait_until(caught_up, 30, what="e2e_probe caught up")
    collect = entry["handlers"]["collect"]
    assert collect["handled"] >= 1 and collect["lag"] == 0 and collect["mode"] == "queued"


def _allowed_cpus(pid: int, tid: int) -> str:
    for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no Cpus_allowed_list for thread {tid} of {pid}")


def test_each_sandbox_runs_on_one_cpu_with_its_zeromq_threads(hostd):
    """``sandbox.pin_cpu`` (on by default): one CPU per sandbox, spread, ZeroMQ's threads with it."""
    status = hostd.modules()
    running = {name: entry for name, entry in status.items() if entry["state"] == "running"}
    assert len(running) >= 4, status
    available = os.sched_getaffinity(0)
    per_cpu: dict = {}
    for name, entry in running.items():
        process = psutil.Process(entry["pid"])
        (cpu,) = process.cpu_affinity()  # exactly one
        assert cpu in available
        assert entry["confinement"]["cpu"] == f"runs on CPU {cpu}", entry["confinement"]
        threads = [thread.id for thread in process.threads()]
        assert len(threads) >= 2  # its own and ZeroMQ's I/O thread
        assert {_allowed_cpus(process.pid, tid) for tid in threads} == {str(cpu)}, name
        per_cpu[cpu] = per_cpu.get(cpu, 0) + 1
    # spread: no CPU holds more than its share. A module that failed after its launch gave its
    # CPU back, but those that started meanwhile keep theirs: count it in the share.
    most = -(-len(status) // len(available))
    assert max(per_cpu.values()) <= most, per_cpu


def _zeromq_io_threads(process: psutil.Process) -> list[int]:
    threads = [thread.id for thread in process.threads()]
    return [tid for tid in threads
            if Path(f"/proc/{process.pid}/task/{tid}/comm").read_text().startswith("ZMQbg/IO/")]


def test_web_workers_call_each_sandbox_from_its_cpu_with_batch_io_threads(hostd):
    """sandbox.transport: every ZeroMQ I/O thread, in sandboxes and web workers, runs SCHED_BATCH;
    a worker reaches a pinned sandbox through an I/O thread pinned to the sandbox's CPU."""
    if not batch_policy_allowed():
        pytest.skip("this machine refuses SCHED_BATCH (seccomp?)")
    assert hostd.view("hello_world") == "<html>Hello world!</html>"
    for _ in range(8):  # enough calls for the web workers to open their sockets
        assert hostd.view("hello_world") == "<html>Hello world!</html>"
        assert hostd.query("event_count") is not None
        assert hostd.query("uses_cache") is not None
        assert hostd.query("dumped_count") >= 0
        assert len(hostd.query("get_grades", course="c")) == 1000
    status = hostd.modules()
    sandbox_cpus = {}
    for name, entry in status.items():
        if entry["state"] != "running":
            continue
        sandbox = psutil.Process(entry["pid"])
        (sandbox_cpus[name],) = sandbox.cpu_affinity()
        io_threads = _zeromq_io_threads(sandbox)
        assert io_threads, name
        assert {os.sched_getscheduler(tid) for tid in io_threads} == {os.SCHED_BATCH}, name
        assert os.sched_getscheduler(sandbox.pid) == os.SCHED_OTHER, name  # the module's own thread

    workers = [child for child in psutil.Process(hostd.process.pid).children(recursive=True)
               if "hostd.wsgi" in " ".join(child.cmdline())
               and "hostd.wsgi" in " ".join(child.parent().cmdline())]
    assert workers
    pinned = set()
    for worker in workers:
        for tid in _zeromq_io_threads(worker):
            assert os.sched_getscheduler(tid) == os.SCHED_BATCH, (worker.pid, tid)
            allowed = _allowed_cpus(worker.pid, tid)
            if allowed != _allowed_cpus(worker.pid, worker.pid):  # a context near one sandbox
                pinned.add(int(allowed))  # exactly one CPU
    if len(os.sched_getaffinity(0)) > 1:  # with one CPU, every thread is "pinned" to it anyway
        called = {sandbox_cpus[name] for name in ("hello", "event_count", "e2e_probe", "dump_to_db", "grades")}
        assert called <= pinned <= set(sandbox_cpus.values()), (called, pinned, sandbox_cpus)


# -- 12. the data dir -------------------------------------------------------------

def test_data_dir_lock_and_store_url(hostd, tmp_path):
    empty = tmp_path / "no_modules"
    empty.mkdir()
    config = tmp_path / "hostd.toml"
    config.write_text("[limits]\ncall_timeout_s = 3\n", encoding="utf-8")
    second = subprocess.run(_hostd_command(hostd.data_dir, _free_port(), config, [empty]),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    output = second.stdout + second.stderr
    assert second.returncode != 0, output
    assert "in use" in output and str(hostd.data_dir) in output, output
    assert "Insights dashboard" not in output

    # the first daemon is unharmed
    assert hostd.get("/healthz").status_code == 200
    assert hostd.view("hello_world") == "<html>Hello world!</html>"

    path = hostd.data_dir / "store.url"
    assert path.is_file()
    assert path.stat().st_mode & 0o777 == 0o600
    url = path.read_text().strip()
    (sock, port), = parse_uri(url)["nodelist"]
    assert port is None and stat.S_ISSOCK(os.stat(sock).st_mode)  # a unix socket, no TCP port
    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
    try:
        assert client.admin.command("ping")["ok"] == 1
        assert client["mod_e2e_probe"].name == "mod_e2e_probe"
    finally:
        client.close()
