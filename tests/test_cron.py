"""Cron: tasks run on schedule in the module's sandbox, one run at a time, shown in /modules."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from hostd.scheduler import CronLeases
from running_hostd import start_daemon, stop_daemon, wait_until
from sandbox import cron
from sandbox.errors import AlreadyRunning, ModuleLoadError, ModuleRaised
from sandbox.testing import ModuleHarness

CRON_MODULE = '''
import time
from sandbox import cron, query


@cron(every=0.3)
def tick(db):
    """Counts its runs."""
    db["runs"].update_one({"_id": "tick"}, {"$inc": {"n": 1}}, upsert=True)
    return "ticked"


@cron(every=0.2)
def slow(db):
    """Takes longer than its period: the runs due meanwhile are skipped."""
    db["runs"].update_one({"_id": "slow"}, {"$inc": {"n": 1}}, upsert=True)
    time.sleep(0.7)


@cron(cron="0 3 * * *", params={"level": "deep"})
def nightly(level: str):
    """At 03:00 every night."""
    if level != "deep":
        raise ValueError(level)
    raise RuntimeError("nightly failed on purpose")


@cron(cron="0 4 * * *")
def report():
    return "reported"


@query()
def runs(db, task: str):
    doc = db["runs"].find_one({"_id": task})
    return doc["n"] if doc else 0
'''


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cron") / "cronmod"
    folder.mkdir()
    (folder / "__init__.py").write_text(CRON_MODULE, encoding="utf-8")
    with ModuleHarness(folder) as h:
        yield h


def test_tasks_run_on_schedule_and_show_in_status(harness):
    wait_until(lambda: harness.query("runs", task="tick") >= 3, 30, what="three runs of tick")
    def between_runs():
        crons = harness.status()["crons"]
        return crons if not crons["tick"]["running"] else None
    crons = wait_until(between_runs, 10, interval_s=0.02, what="tick between two runs")
    assert set(crons) == {"tick", "slow", "nightly", "report"}
    tick = crons["tick"]
    assert tick["schedule"] == "every 0.3 s"
    assert tick["runs"] >= 3 and tick["last_error"] is None
    assert tick["last_start"] <= tick["last_end"] and tick["next_run"] > tick["last_start"]
    nightly = crons["nightly"]
    assert nightly["schedule"] == "cron 0 3 * * *" and nightly["runs"] == 0
    assert time.localtime(nightly["next_run"]).tm_hour == 3 and time.localtime(nightly["next_run"]).tm_min == 0


def test_a_run_still_going_when_the_next_is_due_is_skipped_and_counted(harness):
    status = wait_until(lambda: harness.status()["crons"]["slow"]["skips"] >= 2 and harness.status()["crons"],
                        30, what="skipped runs of slow")
    slow = status["slow"]
    assert slow["runs"] >= 1
    # every run counted by the function itself was one the scheduler started: none ran twice at once
    assert harness.query("runs", task="slow") <= slow["runs"] + 1


def test_run_cron_runs_a_task_now_with_its_params(harness):
    assert harness.run_cron("tick") == "ticked"
    with pytest.raises(ModuleRaised):
        harness.run_cron("nightly")  # its params reach it (level=deep), then it raises
    nightly = wait_until(lambda: harness.status()["crons"]["nightly"]["runs"] >= 1
                         and harness.status()["crons"]["nightly"], 10, what="the nightly run counted")
    assert "RuntimeError" in nightly["last_error"] or "raised" in nightly["last_error"]


def test_one_run_at_a_time_through_the_lease(harness):
    leases = CronLeases(harness.host.storage.state_db)
    now = time.time()
    assert leases.acquire("other", "job", "node-a", 60, now)
    assert not leases.acquire("other", "job", "node-b", 60, now + 1)  # held
    leases.release("other", "job", "node-a", None, now + 2)
    assert leases.acquire("other", "job", "node-b", 60, now + 3)      # given back
    assert leases.acquire("other", "job", "node-c", 60, now + 100)    # expired (its holder died)
    state = leases.state("other", "job")
    assert state["holder"] == "node-c" and state["runs"] == 1


def test_run_cron_refuses_while_a_run_is_going(harness):
    leases = CronLeases(harness.host.storage.state_db)
    assert leases.acquire("cronmod", "nightly", "someone-else", 60, time.time())
    try:
        with pytest.raises(AlreadyRunning):
            harness.run_cron("nightly")
    finally:
        leases.release("cronmod", "nightly", "someone-else", None, time.time())


def test_bad_schedules_are_load_errors():
    with pytest.raises(ModuleLoadError, match="not a cron expression"):
        cron(cron="every day")
    with pytest.raises(ModuleLoadError, match="exactly one"):
        cron(every=5, cron="* * * * *")
    with pytest.raises(ModuleLoadError, match="positive"):
        cron(every=0)


@pytest.mark.e2e
def test_hostd_cron_run_and_modules_through_a_real_daemon(tmp_path):
    modules = tmp_path / "modules"
    (modules / "cronmod").mkdir(parents=True)
    (modules / "cronmod" / "__init__.py").write_text(CRON_MODULE, encoding="utf-8")
    daemon = start_daemon(tmp_path, modules, running={"cronmod"}, failed=set())
    try:
        command = [sys.executable, "-c", "from hostd.cli import main; main()", "cron", "run", "cronmod", "report",
                   "--url", daemon.base]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "cronmod.report ran in" in done.stdout and '"reported"' in done.stdout
        missing = subprocess.run(command[:-4] + ["cronmod", "nosuch", "--url", daemon.base],
                                 capture_output=True, text=True, timeout=60)
        assert missing.returncode != 0 and "404" in missing.stderr
        crons = wait_until(lambda: daemon.modules()["cronmod"]["crons"]["tick"]["runs"] >= 2
                           and daemon.modules()["cronmod"]["crons"], 30, what="tick in /modules")
        assert crons["tick"]["schedule"] == "every 0.3 s"
        answer = daemon.post("/modules/cronmod/cron/nightly/run")
        assert answer.status_code == 500 and "module_error" in answer.text, answer.text
        assert "Traceback" not in answer.text
    finally:
        stop_daemon(daemon)
