"""``hostd rebuild``: drop a module's data, replay its handlers, get the same numbers."""
from __future__ import annotations

import subprocess
import sys

import pytest

from running_hostd import start_daemon, stop_daemon, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

TALLY = '''
import time
from sandbox import event_handler, query


@event_handler(collections=["per_user"])
def by_user(db, events):
    time.sleep(0.5)  # slow enough that a rebuild can be watched
    for e in events:
        db["per_user"].update_one({"_id": "u|" + e["username"]}, {"$addToSet": {"ids": e.meta["id"]}},
                                  upsert=True)


@event_handler()
def totals(db, events):
    for e in events:
        db["seen"].update_one({"_id": "e|" + e.meta["id"]}, {"$set": {"n": 1}}, upsert=True)


@query()
def counts(db):
    return {d["_id"][2:]: len(d["ids"]) for d in db["per_user"].find().limit(1000)}


@query()
def seen(db):
    result = list(db["seen"].aggregate([{"$count": "n"}]))
    return result[0]["n"] if result else 0
'''


def _hostd(*args):
    return subprocess.run([sys.executable, "-c", "from hostd.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def daemon(tmp_path):
    modules = tmp_path / "modules"
    (modules / "tally").mkdir(parents=True)
    (modules / "tally" / "__init__.py").write_text(TALLY, encoding="utf-8")
    running = start_daemon(tmp_path, modules, running={"tally"}, failed=set())
    yield running
    stop_daemon(running)


def _post(daemon, count):
    events = [{"id": f"r{i}", "username": f"user{i % 7}", "event_type": "load"} for i in range(count)]
    for start in range(0, count, 100):
        assert daemon.post("/event", json=events[start:start + 100]).status_code == 202


def test_rebuild_gives_the_same_numbers_and_says_503_meanwhile(daemon):
    _post(daemon, 300)
    first = wait_until(lambda: sum(daemon.query("counts").values()) == 300 and daemon.query("counts"), 60,
                       what="the first run")
    started = daemon.post("/modules/tally/rebuild")
    assert started.status_code == 202, started.text
    body = started.json()
    assert set(body["handlers"]) == {"by_user", "totals"} and set(body["dropped"]) >= {"per_user", "seen"}
    during = daemon.get("/query/counts")
    if during.status_code != 200:  # not caught up yet: no half-computed numbers
        assert during.status_code == 503 and during.json()["error"]["code"] == "rebuilding", during.text
    wait_until(lambda: not daemon.modules()["tally"]["rebuilding"], 60, what="the rebuild to finish")
    assert daemon.query("counts") == first
    assert daemon.query("seen") == 300


def test_the_cli_rebuilds_one_handler_with_a_progress_bar(daemon):
    _post(daemon, 200)
    wait_until(lambda: daemon.query("seen") == 200 and sum(daemon.query("counts").values()) == 200, 60,
               what="the first run")
    first = daemon.query("counts")
    done = _hostd("rebuild", "tally", "--handler", "by_user", "--url", daemon.base)
    assert done.returncode == 0, done.stderr
    assert "dropped per_user; replaying by_user" in done.stdout and "tally rebuilt" in done.stdout
    assert daemon.query("counts") == first and daemon.query("seen") == 200
    refused = _hostd("rebuild", "tally", "--handler", "totals", "--url", daemon.base)
    assert refused.returncode != 0 and "does not declare its collections" in refused.stderr
    missing = _hostd("rebuild", "nosuch", "--url", daemon.base)
    assert missing.returncode != 0 and "404" in missing.stderr
