"""``@memoize_query``: keys, single flight across processes, the variants, through real sandboxes and hostd.

Every memoized function of the probe module counts its own computations in
its database, so the tests count what really ran. Waiting is observed through
the waiter's own sleep (each :class:`Memos` is given one that records the
call), never through timing.
"""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hostd.store import connect
from running_hostd import Daemon, launch, stop_daemon, wait_announced, wait_until
from test_readme_examples import example_module
from sandbox import memoize_query
from sandbox.cache import COLLECTION, CacheStore
from sandbox.errors import CacheMiss, InsightsError, ModuleLoadError, ModuleRaised
from sandbox.memoize import Memos
from sandbox.testing import ModuleHarness

pytestmark = pytest.mark.timeout(180)

MODULES = Path(__file__).parent / "memo_modules"
PROBE = MODULES / "memo_probe"


# -- the key ------------------------------------------------------------------------

def test_the_key_is_the_function_and_its_request_parameters():
    def grades(db, cache, course: str, limit: int = 10):
        return None
    memoized = memoize_query()(grades)
    key = memoized.key({"db": "one db", "cache": "one cache", "course": "x"})
    assert key == memoized.key({"db": "another", "cache": "another", "course": "x", "limit": 10})
    assert key != memoized.key({"db": "one db", "cache": "one cache", "course": "x", "limit": 11})
    assert key != memoized.key({"db": "one db", "cache": "one cache", "course": "y"})

    def other(db, course: str, limit: int = 10):
        return None
    assert memoize_query()(other).key({"course": "x"}) != key


def test_extra_request_parameters_are_part_of_the_key_when_the_function_reads_them():
    def report(params, course: str):
        return None
    memoized = memoize_query()(report)
    assert memoized.key({"course": "x", "params": {"a": "1"}}) != memoized.key({"course": "x", "params": {}})


def test_the_wrapper_keeps_the_signature_and_the_docstring():
    def grades(db, course: str, limit: int = 10):
        """Grades of a course."""
    memoized = memoize_query(cache_time=5, timeout=7)(grades)
    assert memoized.__name__ == "grades" and memoized.__doc__ == "Grades of a course."
    assert (memoized.cache_time, memoized.timeout) == (5, 7)


@pytest.mark.parametrize("options", [{"cache_time": 0}, {"timeout": -1}, {"cache_time": "soon"},
                                     {"timeout": True}])
def test_bad_times_are_load_errors(options):
    with pytest.raises(ModuleLoadError, match="positive number of seconds"):
        memoize_query(**options)


def test_outside_a_sandbox_the_variants_say_where_they_work():
    memoized = memoize_query()(lambda course: course)
    with pytest.raises(RuntimeError, match="sandbox"):
        memoized.from_cache(course="x")


# -- single flight at the store ------------------------------------------------------

class Process:
    """One "process" of a module: its own client and :class:`Memos`, and a record of its waits."""

    def __init__(self, url: str, db_name: str):
        self.client = connect(url)
        self.waited = threading.Event()
        self.memos = Memos(lambda: CacheStore(self.client[db_name][COLLECTION]), services=None,
                           sleep=self._sleep)

    def _sleep(self, seconds):
        self.waited.set()
        time.sleep(seconds)


@pytest.fixture
def processes(store_url, request):
    db_name = "memo_" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16]  # one per test
    started = [Process(store_url, db_name) for _ in range(2)]
    yield started
    for process in started:
        process.client.close()


def test_a_second_process_waits_for_the_first_ones_computation(processes):
    one, two = processes
    started, finish, computed = threading.Event(), threading.Event(), []

    def slow():
        computed.append("one")
        started.set()
        assert finish.wait(30)
        return {"value": 42}

    def fast():
        computed.append("two")
        return {"value": "two's own"}
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(one.memos.get_or_compute, "m|k", slow, 60, 60)
        assert started.wait(30)
        second = pool.submit(two.memos.get_or_compute, "m|k", fast, 60, 60)
        assert two.waited.wait(30)  # it found the lease and is polling
        finish.set()
        assert first.result(30) == second.result(30) == {"value": 42}
    assert computed == ["one"]


def test_a_lapsed_lease_is_taken_over(processes):
    one, two = processes
    assert one.memos.store.acquire("m|k", "a process that died", 0.5) is not None
    assert two.memos.get_or_compute("m|k", lambda: "recomputed", 60, 60) == "recomputed"
    assert two.waited.is_set()
    assert one.memos.get_or_compute("m|k", lambda: "not again", 60, 60) == "recomputed"


def test_a_lease_whose_owner_died_on_this_machine_is_taken_over_at_once(processes):
    one, two = processes
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert one.memos.store.acquire("m|k", f"{socket.gethostname()}:{dead.pid}:0", 600) is not None
    assert two.memos.get_or_compute("m|k", lambda: "taken over", 60, 60) == "taken over"
    assert not two.waited.is_set()


@pytest.mark.parametrize("owner", [f"{socket.gethostname()}:{os.getppid()}:0", "elsewhere:1:0", "garbled"])
def test_a_lease_held_by_a_live_or_remote_process_is_waited_for(processes, owner):
    one, two = processes
    assert one.memos.store.acquire("m|k", owner, 0.3) is not None
    assert two.memos.get_or_compute("m|k", lambda: "after the lease", 60, 60) == "after the lease"
    assert two.waited.is_set()


def test_a_failed_computation_gives_its_lease_back(processes):
    one, two = processes

    def fails():
        raise ValueError("no")
    with pytest.raises(ValueError):
        one.memos.get_or_compute("m|k", fails, 60, 600)
    assert two.memos.get_or_compute("m|k", lambda: "two computed", 60, 600) == "two computed"
    assert not two.waited.is_set()  # no 600 s lease to sit out


def test_a_call_nested_in_its_own_computation_does_not_wait_for_itself(processes):
    one, _ = processes

    def outer():
        return ["outer", one.memos.get_or_compute("m|k", lambda: "inner", 60, 60)]
    assert one.memos.get_or_compute("m|k", outer, 60, 60) == ["outer", "inner"]
    assert not one.waited.is_set()
    assert one.memos.get_or_compute("m|k", lambda: "not again", 60, 60) == ["outer", "inner"]


def test_refresh_recomputes_a_fresh_result(processes):
    one, two = processes
    assert one.memos.get_or_compute("m|k", lambda: 1, 60, 60) == 1
    assert two.memos.refresh("m|k", lambda: 2, 60, 60) == 2
    assert one.memos.get_or_compute("m|k", lambda: 3, 60, 60) == 2


# -- through a real sandbox ----------------------------------------------------------

@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    with ModuleHarness(PROBE, data_dir=tmp_path_factory.mktemp("probe")) as harness:
        yield harness


def _unique(prefix: str) -> str:
    return f"{prefix}{time.monotonic_ns()}"


def test_a_memoized_query_computes_once_and_converts_numpy(probe):
    course = _unique("c")
    expected = [0, len(course), 2 * len(course), 3 * len(course)]
    assert probe.query("slow_total", course=course, pause=0) == expected
    assert probe.query("slow_total", course=course, pause="0") == expected  # converted: one key
    assert probe.query("computations", what=f"slow_total|{course}") == 1
    assert probe.query("cached_total", course=course, pause=0) == expected


def test_from_cache_misses_with_a_domain_error(probe):
    with pytest.raises(CacheMiss, match="no cached result"):
        probe.query("cached_total", course=_unique("never"))


def test_clear_cache_forgets_and_force_memoize_recomputes(probe):
    course = _unique("c")
    probe.query("slow_total", course=course, pause=0.5)
    probe.query("forget_total", course=course)
    with pytest.raises(CacheMiss):
        probe.query("cached_total", course=course)
    # force_memoize with the request's text "0.5": the same key as the default 0.5
    assert probe.query("refresh_total", course=course) == probe.query("cached_total", course=course)
    probe.query("refresh_total", course=course)
    assert probe.query("computations", what=f"slow_total|{course}") == 3
    probe.query("slow_total", course=course)
    assert probe.query("computations", what=f"slow_total|{course}") == 3


def test_a_failing_computation_is_retried_by_the_next_caller(probe):
    run = _unique("r")
    for _ in range(2):
        with pytest.raises(ModuleRaised):
            probe.query("failing", run=run)
    assert probe.query("computations", what=f"failing|{run}") == 2


def test_a_cron_job_on_a_memoized_function_refreshes_it(probe):
    # run as hostd's scheduler runs it: a cron call, with the task's lease
    first = probe.run_cron("nightly")
    assert probe.run_cron("nightly") == first + 1
    assert probe.query("nightly_from_cache") == first + 1


def test_two_processes_of_a_module_share_one_computation(tmp_path):
    run = _unique("r")
    with ModuleHarness(PROBE, data_dir=tmp_path / "one") as one:
        with ModuleHarness(PROBE, data_dir=tmp_path / "two", mongo_url=one.host.storage.url) as two:
            assert one.status()["pid"] != two.status()["pid"]

            def computations():
                doc = one.db["computations"].find_one({"_id": f"gated|{run}"})
                return doc["n"] if doc else 0
            with ThreadPoolExecutor(2) as pool:
                first = pool.submit(one.query, "gated", run=run)
                wait_until(computations, 30, what="the first process to start computing")
                second = pool.submit(two.query, "gated", run=run)
                time.sleep(1)  # let the second call reach its wait (were it later, it would find the result)
                one.db["gates"].insert_one({"_id": run})
                assert first.result(60) == second.result(60) == {"run": run}
            assert computations() == 1


def test_the_readme_example_refreshes_a_report_from_its_event_handler(tmp_path):
    module = tmp_path / "modules" / "memoized"
    module.mkdir(parents=True)
    (module / "__init__.py").write_text(example_module("memoized"), encoding="utf-8")
    with ModuleHarness(module, data_dir=tmp_path / "data") as h:
        with pytest.raises(CacheMiss):
            h.query("cached_report", course="demo")
        h.send_events([{"event_type": "grade", "course": "demo", "username": "ann", "grade": 10},
                       {"event_type": "grade", "course": "demo", "username": "ann", "grade": 20},
                       {"event_type": "grade", "course": "other", "username": "bob", "grade": 5}])
        assert h.query("cached_report", course="demo") == {"ann": 15}
        assert h.query("course_report", course="demo") == {"ann": 15}
        h.send_events([{"event_type": "grade", "course": "demo", "username": "bob", "grade": 7}])
        assert h.query("cached_report", course="demo") == {"ann": 15, "bob": 7}
        assert h.query("course_report", course="other") == {"bob": 5}


def test_a_computation_whose_sandbox_was_killed_is_taken_over(tmp_path):
    """The lease (60 s) outlasts the second call's deadline (10 s): only a takeover answers it."""
    run = _unique("r")
    with ModuleHarness(PROBE, data_dir=tmp_path / "one") as one:
        with ModuleHarness(PROBE, data_dir=tmp_path / "two", mongo_url=one.host.storage.url,
                           settings={"limits.call_timeout_s": 10}) as two:
            def computations():
                doc = one.db["computations"].find_one({"_id": f"gated|{run}"})
                return doc["n"] if doc else 0
            with ThreadPoolExecutor(1) as pool:
                first = pool.submit(one.query, "gated", run=run)
                wait_until(computations, 30, what="the first process to start computing")
                os.kill(one.status()["pid"], signal.SIGKILL)
                with pytest.raises(InsightsError):
                    first.result(60)
            one.db["gates"].insert_one({"_id": run})
            assert two.query("gated", run=run) == {"run": run}
            assert computations() == 2


# -- through hostd --------------------------------------------------------------------

@pytest.fixture(scope="module")
def hostd(tmp_path_factory):
    """``hostd serve`` with 4 web workers and the probe module."""
    tmp = tmp_path_factory.mktemp("memo-hostd")
    data_dir = Path(tempfile.mkdtemp(prefix="insights-memo-"))  # short: unix socket paths are short
    config = tmp / "hostd.toml"
    config.write_text("[server]\nworkers = 4\n\n[limits]\ncall_timeout_s = 30\n", encoding="utf-8")
    process, base, log_path = launch(tmp, data_dir, config, MODULES)
    daemon = Daemon(process, base, log_path, data_dir)
    try:
        wait_announced(process, log_path)
        wait_until(lambda: daemon.get("/healthz").json().get("modules") == {"running": 1}, 60,
                   what="the probe module running in every worker's table")
    except BaseException:
        stop_daemon(daemon)
        raise
    yield daemon
    stop_daemon(daemon)


@pytest.mark.e2e
def test_concurrent_http_callers_share_one_computation(hostd):
    course = _unique("http")
    url = f"/query/slow_total?course={course}&pause=1"
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: hostd.get(url), range(8)))
    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
    assert {r.text for r in responses} == {responses[0].text}
    assert responses[0].json() == [0, len(course), 2 * len(course), 3 * len(course)]
    assert hostd.query("computations", what=f"slow_total|{course}") == 1


@pytest.mark.e2e
def test_a_sandbox_waiting_for_another_process_serves_other_calls(hostd, tmp_path):
    run = _unique("r")
    store_url = (hostd.data_dir / "store.url").read_text(encoding="utf-8").strip()
    with ModuleHarness(PROBE, data_dir=tmp_path / "other", mongo_url=store_url) as other:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(other.query, "gated", run=run)
            wait_until(lambda: hostd.query("computations", what=f"gated|{run}"), 30,
                       what="the other process to start computing")
            waiting = pool.submit(hostd.get, "/query/gated", params={"run": run})
            time.sleep(1)  # let hostd's sandbox reach its wait (were it later, this test would prove less)
            assert hostd.query("computations", what=f"gated|{run}") == 1  # answered while it waits
            assert not waiting.done()
            other.db["gates"].insert_one({"_id": run})
            assert first.result(60) == {"run": run}
            assert waiting.result(60).json() == {"run": run}
    assert hostd.query("computations", what=f"gated|{run}") == 1


@pytest.mark.e2e
def test_a_cache_miss_over_http_names_its_code(hostd):
    response = hostd.get("/query/cached_total", params={"course": _unique("never")})
    assert response.json()["error"]["code"] == "not_cached"
    assert "no cached result" in response.json()["error"]["message"]


@pytest.mark.e2e
def test_a_cache_miss_over_http_is_404(hostd):
    assert hostd.get("/query/cached_total", params={"course": _unique("never")}).status_code == 404
