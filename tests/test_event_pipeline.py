"""End-to-end tests of the durable event pipeline (SPEC §3) against real ``hostd serve`` processes.

The modules under ``tests/pipeline_modules/`` (and ``tests/pipeline_modules_late/``,
loaded only by the backfill test) each record what their handlers received and
expose it through queries:

* ``pipe_collect``: a queued handler over ``collect`` events, counting how many
  times each event identity arrived (an event's ``"sleep"`` slows its batch down);
* ``pipe_poison``: a handler raising ``ValueError`` on ``"poison": true`` events until
  the query ``fix`` is called;
* ``pipe_realtime``: a realtime handler (``rt-slow`` events take 3 s, over the
  realtime timeout);
* ``pipe_batch``: a batch handler (``every=1``) recording the size of each call;
* ``pipe_emit_a`` / ``pipe_emit_b``: a chain through ``emit``;
* ``pipe_backfill_on`` / ``pipe_backfill_off``: handlers with ``backfill=True/False``.

:class:`Hostd` runs one daemon on a data dir and can stop it (SIGTERM), kill it
(SIGKILL) and start it again on the same data dir. Tests that kill or restart
hostd get their own daemon (usually with only the modules they need, linked into a
temporary modules folder); the others share one. They poll with short sleeps and
generous deadlines and never assert on timings. Each test uses its own event
identities (a random tag), so they do not depend on each other's order.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
import requests

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

HERE = Path(__file__).resolve().parent
PIPELINE = HERE / "pipeline_modules"
LATE = HERE / "pipeline_modules_late"
PIPELINE_MODULES = {"pipe_collect", "pipe_poison", "pipe_realtime", "pipe_batch", "pipe_emit_a",
                    "pipe_emit_b"}
MAX_RETRIES = 2
CONFIG = f"""\
[limits]
call_timeout_s = 5
realtime_timeout_s = 1.5
max_retries = {MAX_RETRIES}

[supervisor]
backoff_initial_s = 0.1
backoff_max_s = 1.0

[events]
# a few thousand events make several handler calls, so a kill can land between two
batch_size = 500
"""
HTTP_TIMEOUT_S = 30
HOSTD = [sys.executable, "-c", "from hostd.cli import main; main()"]


# -- helpers ----------------------------------------------------------------

from running_hostd import free_port as _free_port  # noqa: E402
from running_hostd import HttpClient  # noqa: E402
from running_hostd import wait_until as _wait_until  # noqa: E402


def wait_until(predicate, timeout_s: float = 60.0, **options):
    """:func:`running_hostd.wait_until`, with this file's longer default."""
    return _wait_until(predicate, timeout_s, **options)


def _gone(proc: psutil.Process) -> bool:
    """:returns: whether the process no longer runs (a zombie counts as gone)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _describe(procs) -> list:
    out = []
    for proc in procs:
        try:
            out.append((proc.pid, " ".join(proc.cmdline()[1:4])[:80]))
        except psutil.Error:
            out.append((proc.pid, "?"))
    return out


def module_subset(tmp: Path, *names: str) -> Path:
    """:returns: a modules folder holding only ``names`` (links into ``tests/pipeline_modules``)."""
    folder = tmp / ("modules-" + "-".join(names))
    folder.mkdir(exist_ok=True)
    for name in names:
        link = folder / name
        if not link.exists():
            link.symlink_to(PIPELINE / name, target_is_directory=True)
    return folder


def collect_events(tag: str, count: int, start: int = 0) -> list[dict]:
    """``count`` collect events with identities ``<tag>-<n>``."""
    return [{"kind": "collect", "tag": tag, "id": f"{tag}-{n}"} for n in range(start, start + count)]


def new_tag() -> str:
    return "t" + uuid.uuid4().hex[:12]


class Hostd(HttpClient):
    """One ``hostd serve`` on a data dir: start, wait ready, stop, kill -9, start again.

    :param tmp: a private folder for the config and the logs. The data dir is a short
        folder of its own under the system temp dir (unix socket paths are short).
    """

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.data_dir = Path(tempfile.mkdtemp(prefix="pipe-")) / "data"
        self.config = tmp / "hostd.toml"
        self.config.write_text(CONFIG, encoding="utf-8")
        self.process: subprocess.Popen | None = None
        self.base = None
        self.log_path = None
        self.modules_dirs: list = []
        self.runs = 0
        self.orphans: list = []   # processes of a killed daemon not gone yet (checked later)

    # -- lifecycle ------------------------------------------------------------
    def start(self, modules_dirs=None) -> "Hostd":
        """Start ``hostd serve`` on this data dir (a fresh port each time)."""
        assert self.process is None, "already running"
        if modules_dirs is not None:
            self.modules_dirs = [Path(d) for d in modules_dirs]
        self.runs += 1
        port = _free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = self.tmp / f"hostd-{self.runs}.log"
        command = HOSTD + ["serve", "--data-dir", str(self.data_dir), "--port", str(port),
                           "--workers", "2", "--config", str(self.config)]
        for folder in self.modules_dirs:
            command += ["--modules", str(folder)]
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file,
                                            stderr=subprocess.STDOUT, cwd=self.tmp)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"hostd exited with {self.process.returncode}:\n{self.log()[-5000:]}")

    def wait_ready(self, timeout_s: float = 90.0) -> dict:
        """Wait until ``/modules`` shows every module running with its handlers known to delivery,
        and the web workers' module table agrees. :returns: ``{name: state}``."""
        last = {}

        def settled():
            self._check_alive()
            try:
                response = requests.get(self.base + "/modules", timeout=HTTP_TIMEOUT_S)
            except requests.ConnectionError:
                return None
            if response.status_code != 200:
                last["answer"] = (response.status_code, response.text[:500])
                return None
            modules = response.json()
            last["answer"] = {name: (m["state"], sorted(m["handlers"])) for name, m in modules.items()}
            if modules and all(m["state"] == "running" and m["handlers"] for m in modules.values()):
                return {name: m["state"] for name, m in modules.items()}
            return None
        try:
            states = wait_until(settled, timeout_s, interval_s=0.1,
                                what="every module running with its handlers known")
        except AssertionError as err:
            raise AssertionError(f"{err}; last /modules: {last.get('answer')}\n"
                                 f"hostd log:\n{self.log()[-5000:]}") from None
        wait_until(lambda: self.get("/healthz").json()["modules"] == {"running": len(states)}, 30,
                   what="the web workers' module table")
        return states

    def children(self) -> list:
        return psutil.Process(self.process.pid).children(recursive=True)

    def stop(self) -> None:
        """SIGTERM: hostd must exit 0 and leave no process behind."""
        process = self.process
        if process.poll() is not None:
            self.process = None
            raise AssertionError(f"hostd had exited with {process.returncode}:\n{self.log()[-5000:]}")
        children = self.children()
        process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(45)
        except subprocess.TimeoutExpired:
            self._kill_all(children)
            raise AssertionError(f"hostd did not exit within 45 s of SIGTERM:\n{self.log()[-5000:]}")
        finally:
            self.process = None
        assert status == 0, f"hostd exited with {status} after SIGTERM:\n{self.log()[-5000:]}"
        assert children, "hostd had no child process?"
        deadline = time.time() + 15
        while time.time() < deadline and not all(_gone(c) for c in children):
            time.sleep(0.1)
        left = [c for c in children if not _gone(c)]
        self._kill_all(left)
        assert not left, f"processes left after hostd exited: {_describe(left)}"
        assert not (self.data_dir / "store.url").exists(), "store.url left behind"

    def kill9(self, probe=None) -> dict:
        """SIGKILL hostd; its store, sandboxes and web server must die with it (PR_SET_PDEATHSIG).

        :param probe: called as soon as hostd and its gunicorn master are gone.
        :returns: ``{"store": pid, "sandboxes": {module: pid}, "web": pid, "web_workers": [pids],
            "probe": what ``probe`` returned}``.
        """
        process = self.process
        sandboxes = {name: entry["pid"] for name, entry in self.modules().items()}
        children = self.children()
        pids = {c.pid for c in children}
        store = int((self.data_dir / "store" / "nx.pid").read_text().strip())
        web = [c for c in children if c.ppid() == process.pid and "gunicorn" in " ".join(c.cmdline())]
        assert len(web) == 1, _describe(children)
        workers = web[0].children()
        assert store in pids and set(sandboxes.values()) <= pids and workers, (store, sandboxes, _describe(children))
        process.kill()
        process.wait(10)
        self.process = None
        deadline = time.time() + 5
        while time.time() < deadline and not _gone(web[0]):
            time.sleep(0.005)
        probed = probe() if probe is not None else None
        core = [c for c in children if c not in workers]
        deadline = time.time() + 15
        while time.time() < deadline and not all(_gone(c) for c in core):
            time.sleep(0.05)
        left = [c for c in core if not _gone(c)]
        self._kill_all(left)
        assert not left, f"still running 15 s after hostd was killed: {_describe(left)}"
        # gunicorn's workers have no death signal of their own: they notice that their
        # master died at their next wake-up (see test_sigkill_leaves_no_web_worker_answering).
        self.orphans.extend(workers)
        return {"store": store, "sandboxes": sandboxes, "web": web[0].pid,
                "web_workers": [w.pid for w in workers], "probe": probed}

    def assert_orphans_gone(self, timeout_s: float = 40.0) -> None:
        """The web workers of a killed daemon must be gone eventually."""
        deadline = time.time() + timeout_s
        while time.time() < deadline and not all(_gone(p) for p in self.orphans):
            time.sleep(0.2)
        left = [p for p in self.orphans if not _gone(p)]
        self._kill_all(left)
        self.orphans = []
        assert not left, f"web workers of a killed hostd still running after {timeout_s:g} s: {_describe(left)}"

    @staticmethod
    def _kill_all(procs) -> None:
        for proc in procs:
            try:
                proc.kill()
            except psutil.Error:
                pass

    def cleanup(self) -> None:
        """Teardown: stop a daemon still running (checked), then check the killed ones' leftovers."""
        try:
            if self.process is not None:
                self.stop()
        finally:
            try:
                self.assert_orphans_gone()
            finally:
                shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    # -- HTTP -----------------------------------------------------------------
    def post_events(self, body):
        """POST ``body`` (JSON-encoded here) to ``/event``."""
        return self.post("/event", data=json.dumps(body), headers={"Content-Type": "application/json"})

    def modules(self) -> dict:
        response = self.get("/modules")
        assert response.status_code == 200, response.text
        return response.json()

    def module(self, name) -> dict:
        return self.modules()[name]

    def query(self, name, timeout_s: float = 60.0, **params):
        """:returns: the result of a query, waiting out a restart of its module (502/503)."""
        def attempt():
            response = self.get(f"/query/{name}", params=params)
            return None if response.status_code in (502, 503) else (response,)
        response = wait_until(attempt, timeout_s, what=f"query {name} answering")[0]
        assert response.status_code == 200, (name, params, response.status_code, response.text)
        return response.json()

    def caught_up(self, module: str):
        """:returns: the ``/modules`` entry of ``module`` if its handlers are past the log's head."""
        entry = self.module(module)
        handlers = entry["handlers"]
        if (entry["state"] == "running" and handlers and entry["lag"] == 0
                and all(h["position"] is not None for h in handlers.values())):
            return entry
        return None

    def wait_caught_up(self, module: str, timeout_s: float = 60.0) -> dict:
        return wait_until(lambda: self.caught_up(module), timeout_s, what=f"{module} caught up")

    def cli(self, *args, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``hostd <args> --url <this daemon>``."""
        result = subprocess.run(HOSTD + list(args) + ["--url", self.base], capture_output=True, text=True,
                                timeout=60, cwd=self.tmp)
        if check:
            assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr)
        return result


@pytest.fixture
def daemons(tmp_path):
    """A factory of :class:`Hostd` for tests that kill or restart hostd (cleaned up at the end)."""
    made = []

    def make(name: str = "hostd") -> Hostd:
        folder = tmp_path / name
        folder.mkdir()
        daemon = Hostd(folder)
        made.append(daemon)
        return daemon
    yield make
    errors = []
    for daemon in made:
        try:
            daemon.cleanup()
        except AssertionError as err:
            errors.append(str(err))
    assert not errors, errors


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One daemon with every module of ``tests/pipeline_modules``, for the tests that keep it up."""
    daemon = Hostd(tmp_path_factory.mktemp("pipeline_shared"))
    daemon.start([PIPELINE])
    try:
        states = daemon.wait_ready()
        assert set(states) == PIPELINE_MODULES, states
        yield daemon
    finally:
        daemon.cleanup()


# -- hostd killed or restarted (own daemons) -----------------------------------

def test_sigkill_of_hostd_right_after_202(daemons, tmp_path):
    """Events answered 202 are in the log: a kill -9 right after loses none of them."""
    daemon = daemons().start([module_subset(tmp_path, "pipe_collect")])
    daemon.wait_ready()
    tag, count = new_tag(), 1000
    response = daemon.post_events(collect_events(tag, count))
    assert response.status_code == 202, response.text
    roles = daemon.kill9()  # at once
    assert response.json()["accepted"] == count
    assert set(roles["sandboxes"]) == {"pipe_collect"}

    daemon.start()
    daemon.wait_ready()
    wait_until(lambda: daemon.query("distinct_seen", tag=tag) == count, 60,
               what=f"{count} distinct events after the restart")
    entry = daemon.wait_caught_up("pipe_collect")
    assert daemon.query("distinct_seen", tag=tag) == count
    assert entry["dead_letters"] == 0
    print(f"kill -9 after 202: {count} events, max times one was received: "
          f"{daemon.query('max_times', tag=tag)}")
    daemon.assert_orphans_gone()


def test_sigkill_leaves_no_web_worker_answering(daemons, tmp_path):
    """After kill -9 of hostd nothing of it may answer HTTP any more."""
    daemon = daemons().start([module_subset(tmp_path, "pipe_collect")])
    daemon.wait_ready()
    base = daemon.base

    def probe():
        try:
            answer = requests.get(base + "/healthz", timeout=5)
        except requests.ConnectionError:
            return None
        return answer.status_code, answer.text
    try:
        answer = daemon.kill9(probe)["probe"]
    finally:
        Hostd._kill_all(daemon.orphans)  # do not wait up to --timeout / 2 for them
    assert answer is None, f"hostd and its gunicorn master are dead, yet the port answered: {answer}"


def test_sigterm_while_posting(daemons, tmp_path):
    """SIGTERM during a stream of requests: exit 0, and every event answered 202 is processed
    after a restart; requests that failed are not counted."""
    daemon = daemons().start([module_subset(tmp_path, "pipe_collect")])
    daemon.wait_ready()
    tag, base = new_tag(), daemon.base
    accepted, failed, statuses, wrong_ids = [], [], {}, []
    stop = threading.Event()

    def poster():
        batch_no = 0
        while not stop.is_set():
            events = collect_events(tag, 50, start=batch_no * 50)
            batch_no += 1
            ids = [e["id"] for e in events]
            try:
                answer = requests.post(base + "/event", json=events, timeout=HTTP_TIMEOUT_S)
            except requests.RequestException as err:
                statuses[type(err).__name__] = statuses.get(type(err).__name__, 0) + 1
                failed.extend(ids)
                time.sleep(0.02)
                continue
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
            if answer.status_code == 202:
                if answer.json()["ids"] != ids:
                    wrong_ids.append(answer.json())
                accepted.extend(ids)
            else:
                failed.extend(ids)

    thread = threading.Thread(target=poster, name="poster", daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(accepted) >= 1000, 60, what="some batches accepted")
        daemon.stop()  # SIGTERM while the poster keeps going; must exit 0
    finally:
        stop.set()
        thread.join(HTTP_TIMEOUT_S + 5)
    assert not thread.is_alive()
    assert not wrong_ids, wrong_ids[:2]
    print(f"SIGTERM while posting: {len(accepted)} events answered 202, {len(failed)} in failed "
          f"requests; answers: {statuses}")

    daemon.start()
    daemon.wait_ready()
    wait_until(lambda: daemon.query("distinct_seen", tag=tag) >= len(accepted), 60,
               what="every accepted event processed after the restart")
    daemon.wait_caught_up("pipe_collect")
    seen = set(daemon.query("seen_ids", tag=tag))
    assert set(accepted) <= seen, f"{len(set(accepted) - seen)} accepted events never processed"
    assert seen <= set(accepted) | set(failed), "processed events nobody sent?"
    # gunicorn finishes in-flight requests on SIGTERM, so no request is logged without its answer
    assert len(seen) == len(accepted), (len(seen), len(accepted))
    # a graceful stop acknowledges the call in hand: nothing is delivered twice
    assert daemon.query("max_times", tag=tag) == 1


def test_backfill_on_and_off(daemons, tmp_path):
    """A handler seen for the first time gets the past (backfill=True) or only what comes next."""
    daemon = daemons().start([module_subset(tmp_path, "pipe_collect")])
    daemon.wait_ready()
    tag = new_tag()
    before = [{"kind": "backfill", "id": f"{tag}-a{n}"} for n in range(5)]
    response = daemon.post_events(before)
    assert response.status_code == 202 and response.json()["accepted"] == 5, response.text
    daemon.stop()

    daemon.start([PIPELINE, LATE])
    states = daemon.wait_ready()  # also: both backfill handlers known to delivery, cursors set
    assert {"pipe_backfill_on", "pipe_backfill_off"} <= set(states)
    after = [{"kind": "backfill", "id": f"{tag}-b{n}"} for n in range(5)]
    response = daemon.post_events(after)
    assert response.status_code == 202 and response.json()["accepted"] == 5, response.text

    everything = sorted(e["id"] for e in before + after)
    wait_until(lambda: daemon.query("backfill_on_ids") == everything, 60,
               what="the backfill=True handler receiving the past and the new events")
    daemon.wait_caught_up("pipe_backfill_off")
    daemon.wait_caught_up("pipe_backfill_on")
    assert daemon.query("backfill_off_ids") == sorted(e["id"] for e in after)
    assert daemon.query("backfill_on_ids") == everything


# -- one daemon for the rest -------------------------------------------------------

def test_duplicates_are_stored_and_processed_once(shared):
    tag = new_tag()
    event = {"kind": "collect", "tag": tag, "id": f"{tag}-dup"}
    first = shared.post_events(event)
    assert first.status_code == 202, first.text
    assert first.json() == {"accepted": 1, "duplicates": 0, "ids": [event["id"]]}
    second = shared.post_events(event)
    assert second.status_code == 202, second.text
    assert second.json() == {"accepted": 0, "duplicates": 1, "ids": [event["id"]]}

    # without an id the identity is a hash of the content; duplicates inside one request too
    anonymous = {"kind": "collect", "tag": tag, "payload": uuid.uuid4().hex}
    third = shared.post_events([anonymous, event, anonymous])
    assert third.status_code == 202, third.text
    body = third.json()
    assert (body["accepted"], body["duplicates"]) == (1, 2), body
    assert body["ids"][1] == event["id"] and body["ids"][0] == body["ids"][2] != event["id"]
    again = shared.post_events({"payload": anonymous["payload"], "tag": tag, "kind": "collect"})
    assert again.json() == {"accepted": 0, "duplicates": 1, "ids": [body["ids"][0]]}

    shared.wait_caught_up("pipe_collect")
    assert shared.query("times_seen", id=event["id"]) == 1
    assert shared.query("times_seen", id=body["ids"][0]) == 1
    assert shared.query("distinct_seen", tag=tag) == 2


def test_sigkill_of_sandbox_mid_batch(shared):
    """kill -9 of a module's sandbox while it works through a backlog: at least once, no loss."""
    tag, count, size = new_tag(), 3000, 500
    before = shared.module("pipe_collect")
    accepted, killed = 0, None
    for start in range(0, count, size):
        # one slow event per 100: every delivered batch takes a while, so the kill lands inside one
        events = [{"kind": "collect", "tag": tag, "id": f"{tag}-{n}", "sleep": 0.4 if n % 100 == 0 else 0}
                  for n in range(start, start + size)]
        response = shared.post_events(events)
        assert response.status_code == 202, response.text
        accepted += response.json()["accepted"]
        if killed is None and start >= size:
            entry = shared.module("pipe_collect")
            if entry["lag"] > 0:  # mid-backlog: kill it, and keep posting while it restarts
                assert entry["pid"] == before["pid"], entry
                os.kill(entry["pid"], signal.SIGKILL)
                killed = entry
    assert accepted == count
    assert killed is not None, "pipe_collect was never behind: nothing to kill it in the middle of"
    entry = killed

    def restarted():
        now = shared.module("pipe_collect")
        return now if now["state"] == "running" and now["pid"] != entry["pid"] else None
    after = wait_until(restarted, 60, what="pipe_collect running again")
    assert after["restarts"] > before["restarts"]
    wait_until(lambda: shared.query("distinct_seen", tag=tag) >= count, 90,
               what=f"{count} distinct events processed")
    caught_up = shared.wait_caught_up("pipe_collect")
    assert caught_up["dead_letters"] == 0, shared.get("/modules/pipe_collect/dead_letters").json()
    assert shared.query("distinct_seen", tag=tag) == count
    max_times = shared.query("max_times", tag=tag)
    assert max_times >= 1
    print(f"kill -9 of the sandbox mid-batch: {count} events, at least once; "
          f"max times one was received: {max_times}")


def test_poison_event_goes_to_dead_letters_and_back(shared):
    tag = new_tag()
    events = [{"kind": "poison-test", "tag": tag, "id": f"{tag}-{n}", "poison": n == 4} for n in range(10)]
    poison_id = events[4]["id"]
    response = shared.post_events(events)
    assert response.status_code == 202 and response.json()["accepted"] == 10, response.text

    wait_until(lambda: shared.module("pipe_poison")["dead_letters"] == 1, 60, what="one dead letter")
    wait_until(lambda: shared.query("good_seen", tag=tag) == 9, 60, what="the 9 good events processed")
    entry = shared.wait_caught_up("pipe_poison")
    assert entry["dead_letters"] == 1
    assert entry["state"] == "running"
    assert "ValueError" in (entry["last_error"] or ""), entry
    assert shared.query("seen", id=poison_id) is False
    print("times each event was processed around the poison one:", shared.query("poison_times", tag=tag))

    letters = shared.get("/modules/pipe_poison/dead_letters")
    assert letters.status_code == 200, letters.text
    (letter,) = letters.json()
    assert letter["id"] == poison_id
    assert letter["event"] == events[4]
    assert letter["handler"] == "check"
    assert "ValueError" in letter["error"], letter
    # the dead letter says why: the exception's message and the module's traceback
    assert f"poisoned event {poison_id}" in letter["error"] and "Traceback" in letter["error"], letter
    assert letter["attempts"] >= MAX_RETRIES + 1, letter
    assert letter["status"] == "dead"

    listed = shared.cli("dlq", "list", "pipe_poison")
    assert poison_id in listed.stdout and "check" in listed.stdout and "ValueError" in listed.stdout, listed.stdout
    assert "1 dead letter(s)" in listed.stdout, listed.stdout
    as_json = json.loads(shared.cli("dlq", "list", "pipe_poison", "--json").stdout)
    assert [item["id"] for item in as_json] == [poison_id]

    status = shared.cli("status")
    for name in PIPELINE_MODULES:
        assert re.search(rf"^{name}\s+running\b", status.stdout, re.MULTILINE), status.stdout
    assert re.search(r"^pipe_poison\s.*\s1$", status.stdout, re.MULTILINE), status.stdout  # dead: 1

    assert shared.query("fix") is True
    retried = shared.cli("dlq", "retry", "pipe_poison")
    assert "retrying 1 dead letter(s)" in retried.stdout, retried.stdout
    wait_until(lambda: shared.module("pipe_poison")["dead_letters"] == 0, 60, what="the dead letter retried")
    assert shared.query("seen", id=poison_id) is True
    assert shared.get("/modules/pipe_poison/dead_letters").json() == []
    assert "0 dead letter(s)" in shared.cli("dlq", "list", "pipe_poison").stdout

    for method, path in (("GET", "/modules/nosuch/dead_letters"), ("POST", "/modules/nosuch/dead_letters/retry")):
        answer = requests.request(method, shared.base + path, timeout=HTTP_TIMEOUT_S)
        assert answer.status_code == 404, (path, answer.status_code, answer.text)
        assert answer.json()["error"]["code"] == "not_found"
    missing = shared.cli("dlq", "list", "nosuch", check=False)
    assert missing.returncode != 0 and "404" in missing.stderr, (missing.stdout, missing.stderr)


def test_realtime_handlers_run_before_the_answer(shared):
    tag = new_tag()
    rt = {"kind": "rt", "id": f"{tag}-rt"}
    response = shared.post_events(rt)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0, "ids": [rt["id"]]}
    assert shared.query("rt_seen", id=rt["id"]) is True  # no polling: it ran before the answer

    other = shared.post_events({"kind": "not-rt", "id": f"{tag}-other"})
    assert other.status_code == 202, other.text

    slow = {"kind": "rt-slow", "id": f"{tag}-slow"}
    response = shared.post_events(slow)
    assert response.status_code == 504, response.text
    error = response.json()["error"]
    assert error["code"] == "timeout", error
    assert error["ids"] == [slow["id"]] and error["accepted"] == 1, error
    # the event stayed in the log and the handler finished it
    wait_until(lambda: shared.query("rt_seen", id=slow["id"]), 30, what="the slow realtime event processed")
    shared.wait_caught_up("pipe_realtime")


def test_batch_handler_gets_events_of_several_requests(shared):
    requests_sent, per_request = 3, 2
    tag = new_tag()
    for r in range(requests_sent):
        events = [{"kind": "batch", "id": f"{tag}-{r}-{n}"} for n in range(per_request)]
        response = shared.post_events(events)
        assert response.status_code == 202, response.text
    total = requests_sent * per_request
    wait_until(lambda: sum(shared.query("calls")) >= total, 30, what="the batch handler called with every event")
    shared.wait_caught_up("pipe_batch")
    sizes = shared.query("calls")
    assert sum(sizes) == total, sizes
    assert len(sizes) < requests_sent, f"one call per request: {sizes}"
    assert max(sizes) > per_request, sizes


def test_emit_chain(shared):
    tag = new_tag()
    start = {"kind": "chain-start", "id": f"{tag}-start"}
    response = shared.post_events(start)
    assert response.status_code == 202, response.text
    wait_until(lambda: start["id"] in shared.query("derived_from"), 30, what="the derived event")
    assert shared.query("derived_meta", origin=start["id"]) == {"n": 1, "source": "module:pipe_emit_a"}
    # pipe_emit_a's unfiltered handler has gone past the derived event without receiving it
    shared.wait_caught_up("pipe_emit_a")
    kinds = shared.query("emit_a_kinds")
    assert kinds.get("chain-start", 0) >= 1, kinds
    assert "chain-derived" not in kinds, kinds


def test_rejected_batch_stores_nothing(shared):
    tag = new_tag()
    events = collect_events(tag, 4)
    body = events[:2] + [5] + events[2:]
    response = shared.post_events(body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_event" and error["index"] == 2 and "2" in error["message"], error

    marker = {"kind": "collect", "tag": "m" + tag, "id": f"{tag}-marker"}
    assert shared.post_events(marker).status_code == 202
    wait_until(lambda: shared.query("times_seen", id=marker["id"]) == 1, 30, what="the marker processed")
    shared.wait_caught_up("pipe_collect")
    assert shared.query("distinct_seen", tag=tag) == 0
    # nothing of the rejected batch is in the log: its events are new now
    again = shared.post_events(events)
    assert again.status_code == 202
    assert again.json() == {"accepted": 4, "duplicates": 0, "ids": [e["id"] for e in events]}
