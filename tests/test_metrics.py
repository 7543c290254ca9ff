"""``GET /metrics``: in-process through the app factory, and summed over the workers of a real hostd."""
from __future__ import annotations

import json
import os
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import falcon.testing
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hostd.app import create_app
from hostd.metrics import RESTART_REASONS, prepare_multiproc_dir, restart_reason
from running_hostd import start_daemon, stop_daemon, wait_until
from hostd.modtable import Snapshot
from hostd.web import RealtimeTimeout
from test_app import TABLE, FakeWeb

pytestmark = pytest.mark.timeout(240)

MODULES = Path(__file__).parent / "metrics_modules"


def samples(text: str) -> dict:
    """:returns: ``{(sample name, frozenset of label items): value}`` of a Prometheus text."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels) -> float | None:
    """:returns: the sample ``name`` with exactly ``labels``, or None."""
    return found.get((name, frozenset(labels.items())))


def total(found: dict, name: str, **labels) -> float:
    """:returns: the sum of the samples ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, items), v in found.items() if n == name and wanted <= items)


# -- the reasons, from the texts the supervisor writes ------------------------------------------

@pytest.mark.parametrize("text, state, reason", [
    ("sandbox process killed by SIGKILL (status -9)", "restarting", "crashed"),
    ("sandbox process exited with status 1", "running", "crashed"),
    ("killed: query 'slow' of module 'm' did not answer within 1 s", "running", "timeout"),
    ("killed: over its memory limit (256 MiB)", "restarting", "memory"),
    ("not ready after 30 s", "restarting", "start_timeout"),
    ("Traceback (most recent call last):\n  ...\nImportError: x", "failed", "load_failed"),
    ("cannot prepare the sandbox: no space", "restarting", "other"),
    (None, "running", "other"),
])
def test_restart_reasons_are_classified_into_a_bounded_set(text, state, reason):
    assert restart_reason(text, state) == reason
    assert reason in RESTART_REASONS


# -- in-process: one process's own registry -------------------------------------------------------

class StatusWeb(FakeWeb):
    """The test_app stand-in, with a ``/modules`` answer holding handlers and call observers."""

    def __init__(self, tmp_path):
        super().__init__(tmp_path)
        self.call_observers = []
        self.status = {
            "grades": {"state": "running", "restarts": 2, "last_error": "sandbox process killed by SIGKILL (status -9)",
                       "dead_letters": 3, "lag": 7, "handlers": {
                           "count_grades": {"mode": "queued", "lag": 7, "handled": 40, "failures": 1}}},
            "broken": {"state": "failed", "restarts": 0, "last_error": "Traceback ...", "dead_letters": 0,
                       "lag": 0, "handlers": {}},
        }

    def call(self, kind, name, params):
        record, _ = self._snapshot.resolve(kind, name)
        try:
            return super().call(kind, name, params)
        finally:
            for observe in self.call_observers:
                observe(record["name"], kind, 0.001)

    def module_status(self):
        return self.status

    def append_events(self, events):
        answer = super().append_events(events)
        if any(e.get("late") for e in events):  # as WebContext does when realtime handlers overran
            raise RealtimeTimeout("realtime handlers did not finish in 1 s", answer)
        return answer


@pytest.fixture
def web(tmp_path):
    return StatusWeb(tmp_path)


@pytest.fixture
def client(web):
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ  # in-process: the app's own registry
    return falcon.testing.TestClient(create_app(web))


def scrape(client) -> dict:
    response = client.simulate_get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def test_requests_are_counted_by_route_template_and_status(client):
    for user in ("a", "b", "c"):
        assert client.simulate_get("/query/course_grades").status_code == 200
        assert client.simulate_get("/view/user_card", params={"user": user}).status_code == 200
    assert client.simulate_get("/query/no_such_query").status_code == 404
    found = scrape(client)
    assert value(found, "insights_http_requests_total", route="/query/{name}", method="GET", status="200") == 3
    assert value(found, "insights_http_requests_total", route="/view/{name}", method="GET", status="200") == 3
    assert value(found, "insights_http_requests_total", route="/query/{name}", method="GET", status="404") == 1
    assert not [key for key in found if dict(key[1]).get("route", "").startswith("/query/course")]


def test_call_latency_is_a_histogram_per_module(client):
    for _ in range(4):
        client.simulate_get("/query/course_grades")
    client.simulate_get("/query/fails")
    found = scrape(client)
    assert value(found, "insights_call_duration_seconds_count", module="grades", kind="query") == 4
    assert value(found, "insights_call_duration_seconds_count", module="misc", kind="query") == 1
    assert value(found, "insights_call_duration_seconds_bucket", module="grades", kind="query", le="+Inf") == 4


def test_events_accepted_are_counted(client):
    for batch in ([{"a": 1}], [{"a": 2}, {"a": 3}]):
        assert client.simulate_post("/event", json=batch).status_code == 202
    assert client.simulate_post("/event", body="[1]").status_code == 400
    found = scrape(client)
    assert value(found, "insights_events_total", outcome="accepted") == 3
    assert value(found, "insights_events_total", outcome="duplicate") == 0


def test_events_logged_before_a_realtime_timeout_are_counted(client):
    response = client.simulate_post("/event", json=[{"late": True}, {"late": True}])
    assert response.status_code == 504 and response.json["error"]["accepted"] == 2
    assert value(scrape(client), "insights_events_total", outcome="accepted") == 2


def test_host_figures_come_from_the_module_status(client, web):
    found = scrape(client)
    assert value(found, "insights_host_up") == 1
    assert value(found, "insights_module_restarts_total", module="grades") == 2
    assert value(found, "insights_module_last_restart_info", module="grades", reason="crashed") == 1
    assert value(found, "insights_module_last_restart_info", module="broken", reason="load_failed") == 1
    assert value(found, "insights_module_state", module="broken", state="failed") == 1
    assert value(found, "insights_module_state", module="broken", state="running") == 0
    assert value(found, "insights_module_dead_letters", module="grades") == 3
    assert value(found, "insights_handler_lag", module="grades", handler="count_grades", mode="queued") == 7
    assert value(found, "insights_handler_handled_total", module="grades", handler="count_grades") == 40
    assert value(found, "insights_handler_failures", module="grades", handler="count_grades") == 1


def test_the_reason_is_the_last_death_even_after_a_call_raised(client, web):
    table = json.loads(json.dumps(TABLE))
    table["modules"]["grades"]["last_exit"] = "killed: over its memory limit (256 MiB)"
    web.snapshot = lambda: Snapshot(table)
    web.status["grades"]["last_error"] = "Traceback (most recent call last): ... ValueError"
    found = scrape(client)
    assert value(found, "insights_module_last_restart_info", module="grades", reason="memory") == 1
    assert [dict(k[1])["reason"] for k in found if k[0] == "insights_module_last_restart_info"
            and dict(k[1])["module"] == "grades"] == ["memory"]


def test_a_silent_host_leaves_the_web_figures(client, web):
    def unavailable():
        raise TimeoutError("hostd did not answer status in time")
    web.module_status = unavailable
    client.simulate_get("/healthz")
    found = scrape(client)
    assert value(found, "insights_host_up") == 0
    assert value(found, "insights_http_requests_total", route="/healthz", method="GET", status="200") == 1
    assert not [key for key in found if key[0].startswith("insights_module_")]


def test_two_apps_in_one_process_count_apart(tmp_path):
    first, second = (falcon.testing.TestClient(create_app(StatusWeb(tmp_path))) for _ in range(2))
    first.simulate_get("/healthz")
    assert value(scrape(first), "insights_http_requests_total", route="/healthz", method="GET", status="200") == 1
    assert value(scrape(second), "insights_http_requests_total", route="/healthz", method="GET", status="200") is None


def test_the_daemon_empties_the_metric_folder_it_hands_to_gunicorn(tmp_path):
    folder = tmp_path / "run" / "metrics"
    folder.mkdir(parents=True)
    (folder / "counter_4242.db").write_bytes(b"left by a previous run")
    (folder / "keep.txt").write_text("not a metric file")
    assert prepare_multiproc_dir(folder) == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]
    assert folder.stat().st_mode & 0o777 == 0o700


# -- a real hostd with two web workers: figures summed over them ----------------------------------

@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    # start_daemon's config has [server] workers = 2: requests land on either worker
    running = start_daemon(tmp_path_factory.mktemp("metrics"), MODULES, {"metered"}, set())
    yield running
    stop_daemon(running)


def daemon_scrape(daemon) -> dict:
    response = daemon.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def worker_files(daemon, kind: str) -> set:
    """:returns: the web worker pids that wrote metric files of ``kind`` (``counter``, ``histogram``)."""
    return {p.name for p in (daemon.data_dir / "run" / "metrics").glob(f"{kind}_*.db")}


def post_queries(daemon, count: int) -> None:
    """``count`` queries at once, each on its own connection, so the workers share them."""
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda n: daemon.query("ping", n=n), range(count)))
    assert answers == list(range(count))


@pytest.mark.e2e
def test_queries_answered_by_any_worker_are_summed_in_every_scrape(daemon):
    before = daemon_scrape(daemon)
    sent = 0
    for _ in range(20):  # until at least two workers have answered some
        post_queries(daemon, 16)
        sent += 16
        if len(worker_files(daemon, "histogram")) >= 2:
            break
    assert len(worker_files(daemon, "histogram")) >= 2, "one worker answered every query"
    for _ in range(6):  # whichever worker answers the scrape
        after = daemon_scrape(daemon)
        route = {"route": "/query/{name}", "method": "POST", "status": "200"}
        assert (value(after, "insights_http_requests_total", **route)
                - (value(before, "insights_http_requests_total", **route) or 0)) == sent
        calls = {"module": "metered", "kind": "query"}
        assert (value(after, "insights_call_duration_seconds_count", **calls)
                - (value(before, "insights_call_duration_seconds_count", **calls) or 0)) == sent
        assert (value(after, "insights_call_duration_seconds_bucket", le="+Inf", **calls)
                == value(after, "insights_call_duration_seconds_count", **calls))


@pytest.mark.e2e
def test_events_accepted_and_duplicates_match_what_was_posted(daemon):
    before = daemon_scrape(daemon)
    events = [{"kind": "other", "id": uuid.uuid4().hex} for _ in range(30)]
    for start in range(0, 30, 5):
        assert daemon.post("/event", json=events[start:start + 5]).status_code == 202
    answer = daemon.post("/event", json=events[:7] + [{"kind": "other", "id": uuid.uuid4().hex}]).json()
    assert (answer["accepted"], answer["duplicates"]) == (1, 7)
    for _ in range(4):
        after = daemon_scrape(daemon)
        assert total(after, "insights_events_total", outcome="accepted") - total(
            before, "insights_events_total", outcome="accepted") == 31
        assert total(after, "insights_events_total", outcome="duplicate") - total(
            before, "insights_events_total", outcome="duplicate") == 7


@pytest.mark.e2e
def test_lag_and_dead_letters_are_those_of_modules(daemon):
    letters = daemon.modules()["metered"]["dead_letters"]
    good = [{"kind": "metered", "n": n, "id": uuid.uuid4().hex} for n in range(5)]
    assert daemon.post("/event", json=good + [{"kind": "metered", "poison": True, "id": uuid.uuid4().hex}]
                       ).status_code == 202

    def settled():
        entry = daemon.modules()["metered"]
        return entry if entry["dead_letters"] == letters + 1 and entry["lag"] == 0 else None
    entry = wait_until(settled, 60, what="the poison event parked as a dead letter")
    found = daemon_scrape(daemon)
    assert value(found, "insights_module_dead_letters", module="metered") == entry["dead_letters"]
    assert entry["handlers"], entry
    for handler, stats in entry["handlers"].items():
        assert value(found, "insights_handler_lag", module="metered", handler=handler,
                     mode=stats["mode"]) == stats["lag"]
        assert value(found, "insights_handler_handled_total", module="metered",
                     handler=handler) == stats["handled"]
        assert value(found, "insights_handler_dead_letters", module="metered",
                     handler=handler) == stats["dead_letters"]
    assert sum(stats["dead_letters"] for stats in entry["handlers"].values()) == entry["dead_letters"]
    assert value(found, "insights_host_up") == 1


@pytest.mark.e2e
def test_a_killed_sandbox_counts_a_restart_with_its_reason(daemon):
    entry = daemon.modules()["metered"]
    before = value(daemon_scrape(daemon), "insights_module_restarts_total", module="metered")
    assert before == entry["restarts"]
    os.kill(entry["pid"], signal.SIGKILL)
    wait_until(lambda: (lambda e: e["restarts"] == entry["restarts"] + 1 and e["state"] == "running")(
        daemon.modules()["metered"]), 60, what="the sandbox restarted")
    assert daemon.get("/query/boom").status_code == 500  # last_error: its traceback, not the death
    wait_until(lambda: "boom" in (daemon.modules()["metered"]["last_error"] or ""), 30, what="the traceback")
    for _ in range(3):
        found = daemon_scrape(daemon)
        assert value(found, "insights_module_restarts_total", module="metered") == before + 1
        assert value(found, "insights_module_last_restart_info", module="metered", reason="crashed") == 1
        assert value(found, "insights_module_state", module="metered", state="running") == 1


@pytest.mark.e2e
def test_counts_of_a_worker_that_exited_stay_in_the_totals(daemon):
    post_queries(daemon, 8)
    calls = {"module": "metered", "kind": "query"}
    before = value(daemon_scrape(daemon), "insights_call_duration_seconds_count", **calls)
    workers = {child.pid: child for child in psutil.Process(daemon.process.pid).children(recursive=True)
               if child.parent().cmdline()[-1:] == ["hostd.wsgi:application"]}
    answered = [int(name[len("histogram_"):-len(".db")]) for name in worker_files(daemon, "histogram")]
    gone = next(pid for pid in answered if pid in workers)  # a worker holding some of the counts
    workers[gone].terminate()  # gunicorn starts another in its place
    workers[gone].wait(30)
    wait_until(lambda: len([c for c in psutil.Process(daemon.process.pid).children(recursive=True)
                            if c.parent().cmdline()[-1:] == ["hostd.wsgi:application"]]) == 2, 30,
               what="gunicorn's replacement worker")
    for _ in range(4):
        assert value(daemon_scrape(daemon), "insights_call_duration_seconds_count", **calls) == before
