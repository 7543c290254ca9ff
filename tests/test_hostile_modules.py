"""Hostile modules next to well-behaved ones, against a real ``hostd serve`` (issue 5).

Each case runs one hostile module (``tests/hostile_modules/<name>``) in a daemon
that also runs two well-behaved modules: ``good_a`` (a constant query, a handler
counting events by tag) and ``good_b`` (a query computing with numpy). While a
case runs, a client thread keeps calling the good modules' queries and records
every answer; at the end of the case every one of them must have been a correct
200, the good modules must still have the same pid (never restarted), their
handler must still receive events, and hostd must be alive with ``/healthz`` 200.
The hostile module must be shown in ``GET /modules`` with the right state and a
helpful ``last_error``, and it must recover once fixed: its ``__init__.py`` is
replaced by ``tests/hostile_modules/_fixed/<name>.py``, hot reload restarts it,
and it runs and answers.

Daemons are grouped so that modules of one group cannot disturb each other's
checks (one daemon per test class, stopped at the end of the class, so a module
looping at import does not eat the CPU of later groups):

* :class:`TestRunawayCalls`: infinite loop in a query, segfault in a query,
  ``os._exit`` in a handler, a handler raising on every event;
* :class:`TestBrokenStartup`: infinite loop at import, ``os._exit(1)`` at import,
  ``os._exit(3)`` (the status reserved for "failed to load") at import;
* :class:`TestResourceBombs`: memory bomb, fork bomb, sleepers escaping the
  sandbox (double fork + setsid) then SIGTERM of hostd;
* :class:`TestIsolation`: reading (or writing) other modules' files, hostd's
  data dir and secrets, signalling other processes, reaching the store (its URL,
  TCP) and hostd over TCP, using the ``db`` handle's client to forge events, move
  another module's cursor or read its database, tracing hostd, reading its
  environment, making a user namespace.

Runaway calls, resource bombs and isolation run in two modes (the ``mode``
parameter of their daemon fixture): ``root``, hostd run by the user running the
tests (root, so with per-module uids, namespaces and cgroups), and
``unprivileged``, hostd run as the ``insights-test`` system user from a venv of
``/usr/bin/python3`` (see ``tests/unprivileged.py``; skipped with the reason when
the tests are not root or that interpreter is missing). Without root, hostd has
no cgroups and no uid switch: cases that need them are skipped in that mode;
sandboxes confine themselves with user, network and mount namespaces, Landlock
and seccomp instead, and every isolation case must hold there too.

Every daemon is stopped with SIGTERM and must exit 0 leaving nothing behind: no
descendant captured before the signal may remain, nor any process with the data
dir in its command line (sandboxes and whatever they forked carry their spec
path there). Checks that fail because of a reported hostd bug raise
:class:`KnownBug` at the very end of their test, which is marked
``xfail(strict=True, raises=KnownBug)``: every other check still runs and fails
for real, and the marker must go when the bug is fixed.

Modules are copied (not symlinked) into a folder per daemon under ``tmp_path``:
fixing one overwrites its copy, and hot reload maps changes by resolved path.
Tests poll with deadlines and never assert on timings. Cases that need root
(process limits, killing escaped processes, per-module uids and namespaces) are
skipped with the reason when hostd cannot have them.

The isolation cases also check from outside what a module's claim cannot show:
the forged event is not in the log, the victim's cursor did not move.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pymongo
import pytest
import requests

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

HOSTILE_MODULES = Path(__file__).resolve().parent / "hostile_modules"
FIXED = HOSTILE_MODULES / "_fixed"
GOOD = ("good_a", "good_b")
CALL_TIMEOUT_S = 2
MEMORY_MB = 256
MAX_PROCESSES = 32
START_TIMEOUT_S = 5
MAX_RETRIES = 2
CRASHLOOP_RESTARTS = 3
CONFIG = f"""\
[limits]
call_timeout_s = {CALL_TIMEOUT_S}
memory_mb = {MEMORY_MB}
max_processes = {MAX_PROCESSES}
start_timeout_s = {START_TIMEOUT_S}
max_retries = {MAX_RETRIES}

[supervisor]
backoff_initial_s = 0.2
backoff_max_s = 1.0
crashloop_restarts = {CRASHLOOP_RESTARTS}
"""
HTTP_TIMEOUT_S = 30
GOOD_A_CONST = {"answer": 42, "module": "good_a"}
DENIED = {"PermissionError", "FileNotFoundError"}
KILL_DENIED = {"PermissionError", "ProcessLookupError"}


def _cgroups_v1() -> bool:
    """Whether hostd (as this user) gets per-sandbox v1 memory and pids cgroups."""
    if os.geteuid() != 0:
        return False
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return False
    controllers = {c for line in lines for c in line.split(":", 2)[1].split(",")}
    return all(c in controllers and Path("/sys/fs/cgroup", c).is_dir() for c in ("memory", "pids"))


IS_ROOT = os.geteuid() == 0
CGROUPS = _cgroups_v1()
NO_CGROUPS = "process limits and killing escaped processes need hostd to run as root, with cgroup v1 memory/pids"
needs_root = pytest.mark.skipif(not IS_ROOT, reason="per-module uids and namespaces need hostd to run as root")
#: hostd as the user running the tests, or as an unprivileged user (tests/unprivileged.py)
MODES = ("root", "unprivileged")


class IsolationBreach(AssertionError):
    """A hostile module reached something it must not."""


class KnownBug(AssertionError):
    """A check that fails because of a reported hostd bug (the only failure its xfail expects)."""


def check_known_bugs(failed: list[str]) -> None:
    """Raise :class:`KnownBug` for the known-bug checks that failed; call it last, so that every
    other check of the test ran (and a failure of those is a real failure, not the xfail)."""
    if failed:
        raise KnownBug("; ".join(failed))


# -- helpers -------------------------------------------------------------------

from running_hostd import HttpClient, free_port as _free_port, wait_until  # noqa: E402
from unprivileged import account as unprivileged_account  # noqa: E402


def _gone(pid: int) -> bool:
    """:returns: whether process ``pid`` no longer runs (a zombie counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_error(response, status: int, code: str) -> dict:
    """Check an error answer: the status and the ``{"error": {"code", "message"}}`` body."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    return error


def _processes_mentioning(text: str) -> list[psutil.Process]:
    """:returns: live processes with ``text`` in their command line."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if process.pid == os.getpid() or process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(text in arg for arg in process.info["cmdline"] or ()):
            found.append(process)
    return found


def _kill_quietly(processes) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()


class Daemon(HttpClient):
    """A running ``hostd serve`` over a folder of copied modules, and the calls the tests make.

    :param root: its folder (modules, data dir, config, log).
    :param modules: the modules to copy in.
    :param account: an :class:`unprivileged.Account` to run hostd as (``root`` must be its
        folder), or None for the user running the tests.
    """

    def __init__(self, root: Path, modules: list[str], account=None):
        self.root = root
        self.account = account
        #: whether hostd has per-sandbox memory and pids cgroups
        self.cgroups = CGROUPS and account is None
        self.modules_dir = root / "modules"
        self.data_dir = root / "data"
        self.log_path = root / "hostd.log"
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = None
        self.report = None
        self.modules_dir.mkdir()
        for name in modules:
            shutil.copytree(HOSTILE_MODULES / name, self.modules_dir / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        config = root / "hostd.toml"
        config.write_text(CONFIG, encoding="utf-8")
        python, options = sys.executable, {"cwd": root}
        if account is not None:
            account.own(root)
            python, options = account.python, account.popen_kwargs(root)
        command = [python, "-c", "from hostd.cli import main; main()", "serve",
                   "--config", str(config), "--modules", str(self.modules_dir),
                   "--data-dir", str(self.data_dir), "--port", str(self.port)]
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file,
                                            stderr=subprocess.STDOUT, **options)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self) -> None:
        def announced():
            if self.process.poll() is not None:
                raise AssertionError(f"hostd exited with {self.process.returncode}:\n{self.log()[-5000:]}")
            return "Insights dashboard:" in self.log()
        wait_until(announced, 90, what="the dashboard URL in hostd's log")
        for name in GOOD:
            self.wait_module(name, self._healthy, "running", 60)
        self.wait_answer("good_a_const", GOOD_A_CONST)
        self.wait_answer("good_b_sum", 45, n=10)

    def _healthy(self, entry: dict) -> bool:
        """Whether a good module runs; fail at once, with its sandbox's log, if it cannot."""
        if entry["state"] in ("crashloop", "failed"):
            name = Path(entry["path"]).name
            sandbox_log = self.data_dir / "logs" / f"{name}.log"
            tail = sandbox_log.read_text(errors="replace")[-2000:] if sandbox_log.exists() else ""
            raise AssertionError(f"well-behaved module {name} is {entry['state']}: {entry['last_error']}\n"
                                 f"its log:\n{tail}")
        return entry["state"] == "running"

    # -- HTTP ----------------------------------------------------------------
    def modules(self) -> dict:
        response = self.get("/modules")
        assert response.status_code == 200, response.text
        return response.json()

    def module(self, name: str) -> dict:
        return self.modules()[name]

    def wait_module(self, name: str, predicate, what: str, timeout_s: float = 60.0) -> dict:
        """:returns: ``name``'s ``/modules`` entry once ``predicate(entry)`` holds."""
        seen = []

        def check():
            entry = self.module(name)
            seen[:] = [entry]
            return entry if predicate(entry) else None
        try:
            return wait_until(check, timeout_s, what=f"module {name} {what}")
        except AssertionError as err:
            lines = [line for line in self.log().splitlines() if f"module {name}" in line]
            raise AssertionError(f"{err}\nits last /modules entry: {seen}\nhostd log lines about it:\n"
                                 + "\n".join(lines[-40:]) + f"\nhostd log tail:\n{self.log()[-3000:]}") from None

    def wait_answer(self, query: str, expected, timeout_s: float = 60.0, **params):
        """Poll a query until it answers 200 with ``expected`` (404/502/503 while its module (re)starts)."""
        def check():
            response = self.get(f"/query/{query}", params=params)
            if response.status_code in (404, 502, 503):
                return None
            assert response.status_code == 200, (query, response.status_code, response.text)
            return (response.json(),) if response.json() == expected else None
        return wait_until(check, timeout_s, what=f"query {query} answering {expected!r}")[0]

    def query(self, name: str, method: str = "GET", **params):
        """:returns: the result of a query that must answer 200 at once."""
        if method == "GET":
            response = self.get(f"/query/{name}", params=params)
        else:
            response = self.post(f"/query/{name}", json=params)
        assert response.status_code == 200, (name, response.status_code, response.text)
        return response.json()

    def post_events(self, events: list[dict]) -> list[str]:
        """:returns: the identities of the posted events."""
        response = self.post("/event", json=events)
        assert response.status_code == 202, response.text
        return response.json()["ids"]

    def serving(self, name: str) -> dict:
        """Wait until hostile module ``name`` runs its hostile code and answers. :returns: its entry."""
        self.wait_answer(f"{name}_status", "hostile")
        return self.wait_module(name, lambda e: e["state"] == "running", "running")

    def fix(self, name: str) -> dict:
        """Replace ``name``'s ``__init__.py`` by its fixed version; wait until it runs and answers.

        :returns: its ``/modules`` entry, fixed.
        """
        # A supervisor restarting the module by itself may load the fixed code before the hot
        # reload replaces that supervisor: wait for the reload's fresh supervisor (its start is the
        # only "stopped -> starting" of a module after hostd's own start).
        restarted = f"module {name}: stopped -> starting"
        reloads = self.log().count(restarted)
        staged = self.root / f"{name}.fixed.py"
        shutil.copyfile(FIXED / f"{name}.py", staged)
        os.replace(staged, self.modules_dir / name / "__init__.py")  # atomic: the watcher never sees half a file
        wait_until(lambda: self.log().count(restarted) > reloads, 30, what=f"hot reload of {name}")
        self.wait_answer(f"{name}_status", "fixed")
        entry = self.wait_module(name, lambda e: e["state"] == "running", "running after the fix")
        assert entry["last_error"] is None, entry  # a fresh load: the old error is not shown as current
        assert isinstance(entry["pid"], int) and psutil.pid_exists(entry["pid"])
        return entry

    def assert_alive(self) -> None:
        assert self.process.poll() is None, f"hostd exited with {self.process.returncode}:\n{self.log()[-5000:]}"
        health = self.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text

    # -- the end -------------------------------------------------------------
    def stop(self) -> dict:
        """SIGTERM hostd (once); :returns: what happened: exit status and what was left behind."""
        if self.report is not None:
            return self.report
        try:
            descendants = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = f"still running 60 s after SIGTERM (killed), status {self.process.wait()}"
        _, alive = psutil.wait_procs(descendants, timeout=10)
        deadline = time.time() + 10
        leftovers = _processes_mentioning(str(self.data_dir))
        while leftovers and time.time() < deadline:
            time.sleep(0.1)
            leftovers = _processes_mentioning(str(self.data_dir))
        self.report = {"status": status, "descendants": sorted(p.pid for p in descendants),
                       "alive": sorted(p.pid for p in alive),
                       "leftovers": [(p.pid, p.info["cmdline"]) for p in leftovers]}
        _kill_quietly([*alive, *leftovers])  # leave the machine clean whatever the verdict
        return self.report

    def assert_stopped_cleanly(self) -> dict:
        report = self.stop()
        assert report["status"] == 0, f"{report}\n{self.log()[-5000:]}"
        assert report["descendants"], "hostd had no child process (store, web server, sandboxes)?"
        assert not report["alive"], f"descendants alive after hostd exited: {report}"
        assert not report["leftovers"], f"processes naming the data dir after hostd exited: {report}"
        assert not (self.data_dir / "store.url").exists()
        return report


def _start(tmp_path_factory, group: str, hostile: list[str], mode: str = "root"):
    """Start a daemon running the good modules and ``hostile`` as ``mode`` (see :data:`MODES`);
    stop it after the class. The unprivileged daemon's folder is that user's, under /tmp."""
    if mode == "root":
        daemon = Daemon(tmp_path_factory.mktemp(group), [*GOOD, *hostile])
    else:
        account = unprivileged_account()
        daemon = Daemon(account.private_dir(f"insights-hostile-{group}-"), [*GOOD, *hostile], account)
    try:
        try:
            daemon.wait_started()
        except BaseException:
            daemon.stop()
            raise
        yield daemon
        daemon.assert_stopped_cleanly()
    finally:
        if mode != "root":
            shutil.rmtree(daemon.root, ignore_errors=True)


class Load(threading.Thread):
    """A client hammering the good modules' queries, recording every answer."""

    def __init__(self, base: str):
        super().__init__(name="hostile-load", daemon=True)
        self._base = base
        self._stopping = threading.Event()
        self.answers: list[tuple] = []  # (path, params, status, correct)
        self.failures: list[tuple] = []

    @property
    def count(self) -> int:
        return len(self.answers)

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        i = 0
        while not self._stopping.is_set():
            i += 1
            n = i % 500
            for path, params, expected in (("/query/good_a_const", {}, GOOD_A_CONST),
                                           ("/query/good_b_sum", {"n": n}, n * (n - 1) // 2)):
                try:
                    response = requests.get(self._base + path, params=params, timeout=HTTP_TIMEOUT_S)
                    body = response.json() if response.headers.get("content-type", "").startswith(
                        "application/json") else response.text[:200]
                    correct = response.status_code == 200 and body == expected
                    status = response.status_code
                except (requests.RequestException, ValueError) as err:
                    correct, status, body = False, None, repr(err)
                self.answers.append((path, params, status, correct))
                if not correct:
                    self.failures.append((time.strftime("%H:%M:%S"), path, params, status, body))
            time.sleep(0.005)


@contextlib.contextmanager
def under_load(daemon: Daemon):
    """Run the body while a client hammers the good modules; then check nothing of theirs suffered."""
    before = {name: daemon.module(name) for name in GOOD}
    load = Load(daemon.base)
    load.start()
    try:
        wait_until(lambda: load.count >= 4, 30, what="the load's first answers")
        yield load
        # the load keeps going after the hostile part too
        mark = load.count
        wait_until(lambda: load.count >= mark + 4, 30, what="more answers to the load")
    finally:
        load.stop()
        load.join(HTTP_TIMEOUT_S + 5)
    assert not load.failures, f"{len(load.failures)} of {load.count} answers were wrong: {load.failures[:10]}"
    daemon.assert_alive()
    # the good modules' handler still gets events
    tag = uuid.uuid4().hex
    daemon.post_events([{"kind": "good", "tag": tag, "n": i} for i in range(3)])
    wait_until(lambda: daemon.query("good_a_seen", tag=tag) == 3, 30, what="good_a handling new events")
    for name, entry in before.items():
        after = daemon.module(name)
        assert after["state"] == "running", after
        assert (after["pid"], after["restarts"]) == (entry["pid"], entry["restarts"]), (name, entry, after)


# -- runaway calls: loop, segfault, exit in a handler, raising handler ----------------

@pytest.fixture(scope="class", params=MODES)
def calls_hostd(tmp_path_factory, request):
    yield from _start(tmp_path_factory, "calls", ["spin_query", "segv_query", "exit_handler", "raise_handler"],
                      request.param)


class TestRunawayCalls:
    def test_infinite_loop_in_query_is_504_then_restarted(self, calls_hostd):
        hostd = calls_hostd
        known_bugs = []
        with under_load(hostd):
            before = hostd.serving("spin_query")
            error = assert_error(hostd.get("/query/spin"), 504, "timeout")
            assert "spin" in error["message"], error
            entry = hostd.wait_module("spin_query", lambda e: e["state"] == "running"
                                      and e["restarts"] > before["restarts"] and e["pid"] != before["pid"],
                                      "restarted after the timeout")
            assert wait_until(lambda: _gone(before["pid"]), 10, what="the looping sandbox gone")
            assert entry["last_error"], entry
            if not re.search(r"time|did not answer", entry["last_error"], re.I):
                known_bugs.append(f"last_error does not name the timeout: {entry['last_error']!r}")
            hostd.wait_answer("spin_query_status", "hostile")  # running and answering again
        assert hostd.fix("spin_query")["restarts"] >= before["restarts"] + 1
        assert hostd.query("spin") == "done"
        check_known_bugs(known_bugs)

    def test_segfault_in_query_is_502_then_restarted(self, calls_hostd):
        hostd = calls_hostd
        with under_load(hostd):
            before = hostd.serving("segv_query")
            assert_error(hostd.get("/query/segv"), 502, "crashed")
            entry = hostd.wait_module("segv_query", lambda e: e["state"] == "running"
                                      and e["restarts"] > before["restarts"] and e["pid"] != before["pid"],
                                      "restarted after the segfault")
            assert re.search(r"-11\b|SIGSEGV|segmentation", entry["last_error"] or "", re.I), entry
            hostd.wait_answer("segv_query_status", "hostile")
        hostd.fix("segv_query")
        assert hostd.query("segv") == 0

    def test_exit_in_handler_restarts_it_and_others_handle_events(self, calls_hostd):
        hostd = calls_hostd
        with under_load(hostd):
            before = hostd.serving("exit_handler")
            tag = uuid.uuid4().hex
            events = [{"kind": "exit_me", "tag": tag}, *({"kind": "good", "tag": tag, "n": i} for i in range(5))]
            ids = hostd.post_events(events)
            wait_until(lambda: hostd.query("good_a_seen", tag=tag) == len(events), 30,
                       what="good_a handling every event, the one that kills exit_handler too")
            hostd.wait_module("exit_handler", lambda e: e["restarts"] > before["restarts"], "restarted")
            # the event it dies on is retried, then parked; then the module runs on
            entry = hostd.wait_module("exit_handler", lambda e: e["dead_letters"] >= 1 and e["state"] == "running",
                                      "running with the fatal event dead-lettered")
            assert entry["pid"] != before["pid"]
            assert "status 1" in (entry["last_error"] or ""), entry
            letters = hostd.get("/modules/exit_handler/dead_letters").json()
            assert [letter["id"] for letter in letters] == [ids[0]], letters
            assert letters[0]["attempts"] > MAX_RETRIES, letters
            hostd.wait_answer("exit_handler_status", "hostile")
        hostd.fix("exit_handler")

    def test_raising_handler_dead_letters_then_retry_when_fixed(self, calls_hostd):
        hostd = calls_hostd
        with under_load(hostd):
            before = hostd.serving("raise_handler")
            tag = uuid.uuid4().hex
            events = [{"kind": "raise_me", "tag": tag, "n": i} for i in range(3)]
            ids = hostd.post_events(events + [{"kind": "good", "tag": tag}])
            wait_until(lambda: hostd.query("good_a_seen", tag=tag) == 4, 30, what="good_a handling the events")
            entry = hostd.wait_module("raise_handler", lambda e: e["dead_letters"] == 3, "with 3 dead letters")
            # raising is not dying: same process, no restart; the traceback is kept for people
            assert (entry["state"], entry["pid"], entry["restarts"]) == ("running", before["pid"], before["restarts"])
            assert "poisoned-by-design" in (entry["last_error"] or "") and "ValueError" in entry["last_error"], entry
            letters = hostd.get("/modules/raise_handler/dead_letters").json()
            assert sorted(letter["id"] for letter in letters) == sorted(ids[:3]), letters
            for letter in letters:
                assert letter["handler"] == "always_raises" and letter["attempts"] > MAX_RETRIES, letter
                assert "ValueError" in letter["error"], letter
                assert letter["event"]["tag"] == tag
        hostd.fix("raise_handler")
        assert hostd.module("raise_handler")["dead_letters"] == 3  # fixing the code does not drop them
        retry = subprocess.run([sys.executable, "-c", "from hostd.cli import main; main()", "dlq", "retry",
                                "raise_handler", "--url", hostd.base],
                               capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert retry.returncode == 0, retry.stdout + retry.stderr
        assert "retrying 3 dead letter(s)" in retry.stdout, retry.stdout
        hostd.wait_module("raise_handler", lambda e: e["dead_letters"] == 0, "with its dead letters drained")
        assert hostd.query("raise_handler_accepted", tag=tag) == sorted(ids[:3])
        assert hostd.get("/modules/raise_handler/dead_letters").json() == []


# -- broken start-up: loop or exit at import ---------------------------------------------

@pytest.fixture(scope="class")
def startup_hostd(tmp_path_factory):
    yield from _start(tmp_path_factory, "startup", ["spin_import", "exit_import", "exit3_import"])


class TestBrokenStartup:
    def test_infinite_loop_at_import_crashloops_then_recovers(self, startup_hostd):
        hostd = startup_hostd
        with under_load(hostd):
            entry = hostd.wait_module("spin_import", lambda e: e["state"] == "crashloop", "in crashloop", 90)
            assert entry["restarts"] >= CRASHLOOP_RESTARTS, entry
            assert "ready" in (entry["last_error"] or ""), entry
            assert f"{START_TIMEOUT_S}" in entry["last_error"], entry
            assert "module spin_import: starting -> restarting" in hostd.log()
            assert re.search(r"module spin_import: \w+ -> crashloop", hostd.log())
            assert_error(hostd.get("/query/spin_import_status"), 404, "not_found")  # never loaded
        entry = hostd.fix("spin_import")
        assert entry["restarts"] >= CRASHLOOP_RESTARTS

    def test_exit_at_import_crashloops_then_recovers(self, startup_hostd):
        hostd = startup_hostd
        with under_load(hostd):
            entry = hostd.wait_module("exit_import", lambda e: e["state"] == "crashloop", "in crashloop", 60)
            assert entry["restarts"] >= CRASHLOOP_RESTARTS, entry
            assert "status 1" in (entry["last_error"] or ""), entry
            assert re.search(r"module exit_import: \w+ -> crashloop", hostd.log())
        hostd.fix("exit_import")

    def test_exit_with_the_load_failed_status_is_explained(self, startup_hostd):
        """Status 3 means "failed to load" (not retried); a module faking it must still be explained."""
        hostd = startup_hostd
        known_bugs = []
        with under_load(hostd):
            entry = hostd.wait_module("exit3_import", lambda e: e["state"] in ("failed", "crashloop"),
                                      "failed (or crashloop)", 60)
            assert entry["pid"] is None, entry
            if not re.search(r"status 3|exit", entry["last_error"] or ""):
                known_bugs.append(f"state {entry['state']} with last_error {entry['last_error']!r}")
        hostd.fix("exit3_import")
        check_known_bugs(known_bugs)


# -- resource bombs: memory, processes, escapees ----------------------------------------

@pytest.fixture(scope="class", params=MODES)
def bombs_hostd(tmp_path_factory, request):
    yield from _start(tmp_path_factory, "bombs", ["mem_bomb", "fork_bomb", "escapee"], request.param)


class TestResourceBombs:
    def test_memory_bomb_is_killed_and_restarted(self, bombs_hostd):
        hostd = bombs_hostd
        with under_load(hostd):
            before = hostd.serving("mem_bomb")
            response = hostd.get("/query/mem_bomb")
            if hostd.cgroups:
                assert_error(response, 502, "crashed")
                entry = hostd.wait_module("mem_bomb", lambda e: e["state"] == "running"
                                          and e["restarts"] > before["restarts"], "restarted")
                assert entry["pid"] != before["pid"]
                assert "memory limit" in (entry["last_error"] or ""), entry
                assert f"{MEMORY_MB}" in entry["last_error"], entry
            else:  # only the address-space backstop: MemoryError inside, or killed
                assert response.status_code in (500, 502), (response.status_code, response.text)
                entry = hostd.wait_module("mem_bomb", lambda e: e["state"] == "running"
                                          and re.search("memory", e["last_error"] or "", re.I), "running")
            hostd.wait_answer("mem_bomb_status", "hostile")
        hostd.fix("mem_bomb")
        assert hostd.query("mem_bomb") == 20 * 1024 * 1024  # 20 MB is fine under the limit

    def test_fork_bomb_is_stopped_by_the_process_limit(self, bombs_hostd):
        hostd = bombs_hostd
        if not hostd.cgroups:
            pytest.skip(NO_CGROUPS)
        with under_load(hostd):
            before = hostd.serving("fork_bomb")
            response = hostd.get("/query/fork_bomb")
            pids = []
            if response.status_code == 200:  # fork failed at the limit and the query returned
                result = response.json()
                pids = result["pids"]
                assert result["error"] and "BlockingIOError" in result["error"], result
                assert 0 < len(pids) < MAX_PROCESSES, result
            else:
                assert response.status_code in (500, 502), (response.status_code, response.text)
            entry = hostd.wait_module("fork_bomb", lambda e: e["state"] == "running", "running")
            if entry["pid"] == before["pid"]:
                hostd.wait_answer("fork_bomb_status", "hostile")  # still serving with its children
                tree = psutil.Process(entry["pid"]).children(recursive=True)
                assert len(tree) < MAX_PROCESSES, tree
        hostd.fix("fork_bomb")
        wait_until(lambda: all(_gone(pid) for pid in pids), 15, what="the fork bomb's children gone")
        assert hostd.query("fork_bomb") == {"pids": [], "error": None}

    def test_no_orphans_after_sigterm(self, bombs_hostd):
        """Last of its class: stops the daemon. Escaped sleepers die with it too (when hostd has cgroups)."""
        hostd = bombs_hostd
        escaped = []
        if hostd.cgroups:
            hostd.serving("escapee")
            escaped = hostd.query("escape", n=3)
            assert len(escaped) == 3
            sandbox = hostd.module("escapee")["pid"]
            for pid in escaped:
                process = psutil.Process(pid)
                assert process.ppid() != sandbox and process.status() != psutil.STATUS_ZOMBIE
        report = hostd.assert_stopped_cleanly()
        assert hostd.process.returncode == 0
        for pid in escaped:
            assert _gone(pid), (pid, report)


# -- isolation: other modules' files, hostd's secrets, the store, hostd itself ----------------

@pytest.fixture(scope="class", params=["root", "unprivileged"])
def isolation_hostd(tmp_path_factory, request):
    yield from _start(tmp_path_factory, "isolation", ["peek_files", "steal_store", "tamper_store", "spy_hostd"],
                      request.param)


def _store(hostd: Daemon) -> pymongo.MongoClient:
    """:returns: a client of the daemon's store, as the test (root) sees it."""
    return pymongo.MongoClient((hostd.data_dir / "store.url").read_text().strip(), serverSelectionTimeoutMS=10000)


def _tree_tcp_ports(pid: int) -> set[int]:
    """:returns: the TCP ports that process ``pid`` and its descendants listen on."""
    pids = {pid} | {child.pid for child in psutil.Process(pid).children(recursive=True)}
    return {c.laddr.port for c in psutil.net_connections(kind="tcp")
            if c.pid in pids and c.status == psutil.CONN_LISTEN}


def _raise_breach(module: str, attempts: dict, denied) -> None:
    reached = {what: outcome for what, outcome in attempts.items() if not denied(outcome)}
    if reached:
        raise IsolationBreach(f"{module} reached: {reached}")


@needs_root
class TestIsolation:
    def test_cannot_read_other_modules_files_or_hostd_secrets(self, isolation_hostd):
        hostd = isolation_hostd
        data = hostd.data_dir
        secret = uuid.uuid4().hex
        with under_load(hostd):
            assert hostd.query("good_a_write_secret", secret=secret) is True
            secret_file = data / "modules" / "good_a" / "fs" / "secret.txt"
            assert secret_file.read_text() == secret  # it is there to be stolen
            hostd.serving("peek_files")
            good_a_pid = hostd.module("good_a")["pid"]
            pwned = data / "modules" / "good_a" / "fs" / "pwned.txt"
            good_a_code = hostd.modules_dir / "good_a"
            attempts = hostd.query("peek", method="POST", read=[
                str(secret_file), "/etc/shadow", str(data / "fs.key"), str(data / "store.url"),
                str(data / "run" / "good_a.spec.json"), str(data / "run" / "runtime.json"),
                str(data / "run" / "control.key"), str(data / "logs" / "good_a.log"),
                f"/proc/{good_a_pid}/environ", f"/proc/{good_a_pid}/root{secret_file}",
                str(good_a_code / "__init__.py"),
            ], write=[str(pwned)], listdir=[str(secret_file.parent), str(data / "run"), str(data / "store"),
                                            str(data / "logs"), str(good_a_code)],
                signal0=[good_a_pid, hostd.process.pid])
            assert hostd.query("peek_own") == "my own data"  # the module itself works
            pwned_exists = pwned.exists()
        hostd.fix("peek_files")
        assert len(attempts) == 19, attempts
        reached = {what: outcome for what, outcome in attempts.items()
                   if outcome not in (KILL_DENIED if what.startswith("kill") else DENIED)}
        if reached or pwned_exists:
            raise IsolationBreach(f"peek_files reached: {reached} (wrote into good_a's fs: {pwned_exists})")

    def test_cannot_reach_the_store_or_hostd_over_tcp(self, isolation_hostd):
        hostd = isolation_hostd
        secret = uuid.uuid4().hex
        with under_load(hostd):
            assert hostd.query("good_a_write_secret", secret=secret) is True
            url = (hostd.data_dir / "store.url").read_text().strip()
            # every TCP port hostd's processes listen on but the HTTP one (the store has none),
            # and the port an nx-27017 takes by default
            store_ports = sorted((_tree_tcp_ports(hostd.process.pid) - {hostd.port}) | {27017})
            hostd.serving("steal_store")
            attempts = hostd.query("steal", method="POST", url=url, store_ports=store_ports, http_port=hostd.port)
            assert hostd.query("steal_own") == "my own data"  # the injected db still works
        hostd.fix("steal_store")
        assert set(attempts) == {"pymongo mod_good_a", "tcp hostd http",
                                 *(f"tcp store {port}" for port in store_ports)}, attempts
        _raise_breach("steal_store", attempts, lambda outcome: not outcome.startswith("ok"))

    def test_cannot_trace_hostd_or_read_its_environment(self, isolation_hostd):
        hostd = isolation_hostd
        with under_load(hostd):
            hostd.serving("spy_hostd")
            attempts = hostd.query("spy", hostd_pid=hostd.process.pid)
            assert psutil.Process(hostd.process.pid).status() != psutil.STATUS_STOPPED
        assert set(attempts) == {"ptrace hostd", "read hostd's environ"}, attempts
        # ESRCH: hostd is not even visible to it
        _raise_breach("spy_hostd", attempts, lambda outcome: outcome in ("EPERM", "EACCES", "ESRCH") or outcome in DENIED)

    def test_cannot_make_a_user_namespace(self, isolation_hostd):
        hostd = isolation_hostd
        with under_load(hostd):
            hostd.serving("spy_hostd")
            outcome = hostd.query("make_user_namespace")
        hostd.fix("spy_hostd")
        if outcome not in ("EPERM", "EACCES", "ENOSPC"):  # ENOSPC: user.max_user_namespaces is 0
            raise IsolationBreach(f"spy_hostd made a user namespace: {outcome}")

    def test_db_client_cannot_forge_events_move_cursors_or_read_others(self, isolation_hostd):
        """Last of its class: where it succeeds, good_a's cursor is left far ahead."""
        hostd = isolation_hostd
        marker = f"forged-{uuid.uuid4().hex}"
        cursor_id = "c|good_a|count_events"
        with _store(hostd) as store:
            with under_load(hostd):  # its events move good_a's cursor: there is one to move
                assert hostd.query("good_a_write_secret", secret=uuid.uuid4().hex) is True
                hostd.serving("tamper_store")
                attempts = {attempt: hostd.query("tamper", attempt=attempt, marker=marker, victim="good_a",
                                                 victim_handler="count_events")
                            for attempt in hostd.query("tamper_attempts")}
                assert hostd.query("tamper_own") == "my own data"  # the injected db still works
            cursor = store["insights_state"]["cursors"].find_one({"_id": cursor_id})
            forged = store["insights"]["events"].find_one({"_id": marker})
        hostd.fix("tamper_store")
        assert len(attempts) == 4, attempts
        assert cursor is not None, "good_a has no cursor: nothing was there to move"
        _raise_breach("tamper_store", attempts, lambda outcome: not outcome.startswith("ok"))
        if forged is not None or cursor["seq"] >= 10 ** 12:
            raise IsolationBreach(f"tamper_store changed the store: forged event {forged}, cursor {cursor}")
