"""Retention (:mod:`hostd.retention`): old log entries go once every cursor passed them, dead
letters on their own setting; against a real embedded store, then inside a real ``hostd serve``."""
import re
import threading
import time
from pathlib import Path

import pytest

from hostd.deadletters import DeadLetters
from hostd.eventlog import Cursors, EventLog
from hostd.retention import DAY_S, Retention, RetentionSettings
from hostd.store import HOST_DB_NAME, connect
from running_hostd import start_daemon, stop_daemon, wait_until

pytestmark = pytest.mark.timeout(180)

LATER = time.time() + 3 * DAY_S   # "now" for a pass that finds every event two days old past one day


class Parts:
    """A log, its cursors and dead letters in a database of their own."""

    def __init__(self, client, name):
        self.db = client[name]
        self.log = EventLog(self.db)
        self.log.ensure_indexes()
        self.cursors = Cursors(self.db)
        self.dead_letters = DeadLetters(self.db)

    def retention(self, events_days=1.0, dead_letter_days=0.0, local_positions=tuple):
        return Retention(self.log, self.cursors, self.dead_letters,
                         RetentionSettings(events_days, dead_letter_days, 0.05), local_positions)

    def append(self, count, tag="e"):
        """:returns: the seqs of ``count`` new events."""
        result = self.log.append([{"tag": tag, "n": n} for n in range(count)], "http")
        return list(range(result["last_seq"] - count + 1, result["last_seq"] + 1))

    def seqs(self):
        return [d["seq"] for d in self.log.events.find({}, {"seq": 1}).sort("seq", 1).limit(10_000)]


@pytest.fixture
def parts(store_url, request):
    client = connect(store_url)
    name = "t_" + re.sub(r"[^a-z0-9_]", "_", request.node.name[:40].lower())
    yield Parts(client, name)
    client.drop_database(name)
    client.close()


def test_zero_keeps_every_event_and_dead_letter(parts):
    seqs = parts.append(5)
    parts.cursors.set("m", "h", seqs[-1])
    parts.dead_letters.add("m", "h", parts.log.read_after(0, 1)[0], "boom", 6)
    done = parts.retention(events_days=0.0, dead_letter_days=0.0).run_once(now=LATER)
    assert done == {"events": 0, "dead_letters": 0}
    assert parts.seqs() == seqs and parts.dead_letters.count("m") == 1


def test_old_events_go_only_once_every_cursor_passed_them(parts):
    seqs = parts.append(10)
    parts.cursors.set("fast", "h", seqs[-1])
    parts.cursors.set("slow", "h", seqs[4])      # a handler behind: a stopped module, or a slow one
    retention = parts.retention()
    assert retention.run_once(now=LATER)["events"] == 5
    assert parts.seqs() == seqs[5:]
    assert retention.stats()["held_back_by"] == "slow/h"
    assert retention.run_once(now=LATER)["events"] == 0   # nothing more until it moves
    parts.cursors.set("slow", "h", seqs[7])
    assert retention.run_once(now=LATER)["events"] == 3
    assert parts.seqs() == seqs[8:]
    parts.cursors.set("slow", "h", seqs[-1])
    assert retention.run_once(now=LATER)["events"] == 2
    assert parts.seqs() == [] and retention.stats()["held_back_by"] is None
    assert retention.stats()["events"] == 10


def test_events_younger_than_the_setting_stay_even_when_every_cursor_passed_them(parts):
    old = parts.append(4, "old")
    parts.log.events.update_many({"seq": {"$in": old}}, {"$set": {"received": time.time() - 3 * DAY_S}})
    young = parts.append(3, "young")
    parts.cursors.set("m", "h", young[-1])
    assert parts.retention().run_once()["events"] == 4
    assert parts.seqs() == young
    assert parts.retention(events_days=2.5).run_once()["events"] == 0


def test_without_any_handler_events_go_by_age_alone(parts):
    parts.append(6)
    assert parts.retention().run_once(now=time.time())["events"] == 0
    assert parts.retention().run_once(now=LATER)["events"] == 6


def test_a_handler_rewound_in_memory_holds_back_what_it_will_read_again(parts):
    seqs = parts.append(6)
    parts.cursors.set("m", "h", seqs[-1])        # the stored cursor stays ahead while a rebuild runs
    retention = parts.retention(local_positions=lambda: [seqs[-1], seqs[1]])
    assert retention.run_once(now=LATER)["events"] == 2
    assert parts.seqs() == seqs[2:]


def test_nodes_running_it_at_once_delete_each_event_once_and_none_past_the_cursors(parts):
    seqs = parts.append(300)
    parts.cursors.set("m", "h", seqs[199])
    nodes = [parts.retention() for _ in range(3)]
    totals = []
    threads = [threading.Thread(target=lambda r=r: totals.append(r.run_once(now=LATER)["events"]))
               for r in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(totals) == 200
    assert parts.seqs() == seqs[200:]


def test_dead_letters_expire_on_their_own_setting(parts):
    seqs = parts.append(4)
    parts.cursors.set("m", "h", seqs[-1])
    for doc in parts.log.read_after(0, 4):
        parts.dead_letters.add("m", "h", doc, "boom", 6)
    letters = parts.dead_letters._coll
    letters.update_many({"seq": {"$in": seqs[:3]}}, {"$set": {"at": time.time() - 3 * DAY_S}})
    letters.update_one({"seq": seqs[0]}, {"$set": {"status": "retry"}})   # an admin asked for a retry
    retention = parts.retention(events_days=0.0, dead_letter_days=2.0)
    assert retention.run_once() == {"events": 0, "dead_letters": 2}
    assert sorted(d["seq"] for d in parts.dead_letters.list("m")) == [seqs[0], seqs[3]]
    assert parts.dead_letters.count("m") == 2
    assert parts.seqs() == seqs   # the log has its own setting
    assert parts.retention(events_days=0.0, dead_letter_days=0.0).run_once(now=LATER)["dead_letters"] == 0


# -- in a real hostd -----------------------------------------------------------------------

PIPELINE = Path(__file__).resolve().parent / "pipeline_modules"
RETENTION_S = 1.5


def _metric(text, name, labels=""):
    found = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


@pytest.fixture
def daemon(tmp_path):
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "pipe_collect").symlink_to(PIPELINE / "pipe_collect")
    daemon = start_daemon(tmp_path, modules, {"pipe_collect"}, set(), more=(
        f"[events]\nretention_days = {RETENTION_S / DAY_S!r}\nretention_interval_s = 0.2\n"))
    client = connect((Path(daemon.data_dir) / "store.url").read_text().strip())
    daemon.store_log = client[HOST_DB_NAME]["event_log"]
    daemon.cursors = Cursors(client[HOST_DB_NAME + "_state"])
    yield daemon
    client.close()
    stop_daemon(daemon)


def _posted(daemon, event) -> int:
    """POST ``event``: :returns: its seq in the log."""
    response = daemon.post("/event", json=event)
    assert response.status_code in (200, 202), response.text
    return daemon.store_log.find_one({"event.id": event["id"]})["seq"]


def _pass_after(daemon, moment):
    """Wait for a retention pass that ended after ``moment`` (epoch s). :returns: the /metrics text."""
    def ended():
        text = daemon.get("/metrics").text
        last = _metric(text, "insights_retention_last_run_timestamp_seconds")
        return text if last and last > moment else None
    return wait_until(ended, 30, what="a retention pass")


def test_hostd_deletes_old_events_once_every_cursor_even_a_removed_modules_passed_them(daemon):
    daemon.cursors.set("gone", "h", 0)   # a module that once ran here and whose folder is gone
    first = _posted(daemon, {"id": "r-1", "kind": "collect", "tag": "r"})
    posted = time.time()
    wait_until(lambda: daemon.query("distinct_seen", tag="r") == 1, 30, what="the event handled")
    text = _pass_after(daemon, posted + RETENTION_S + 0.5)
    assert daemon.store_log.find_one({"seq": first}) is not None
    assert _metric(text, "insights_retention_held_back", '{handler="gone/h"}') == 1.0

    daemon.cursors.set("gone", "h", 10 ** 9)   # now it has passed everything
    wait_until(lambda: daemon.store_log.find_one({"seq": first}) is None, 30, what="the old event deleted")

    # a slow handler holds back the event it is working on: it sleeps 6 s after recording it (its
    # sandbox answers no query meanwhile: the store tells where its cursor is)
    slow = _posted(daemon, {"id": "r-2", "kind": "collect", "tag": "r", "sleep": 6})
    posted = time.time()
    held = 0
    while (daemon.cursors.get("pipe_collect", "collect") or 0) < slow:
        _pass_after(daemon, max(time.time(), posted + RETENTION_S + 0.5))
        if (daemon.cursors.get("pipe_collect", "collect") or 0) < slow:   # so it was behind at that pass
            assert daemon.store_log.find_one({"seq": slow}) is not None
            held += 1
    assert held, "the handler finished before any pass saw its event old"
    wait_until(lambda: daemon.store_log.find_one({"seq": slow}) is None, 30, what="the slow event deleted")
    text = daemon.get("/metrics").text
    assert _metric(text, "insights_retention_deleted_total", '{kind="events"}') >= 2
    assert "retention: deleted" in daemon.log()


def test_a_new_handler_steps_over_what_retention_deleted_at_once(parts):
    """The deleted seqs are declared void: a gap-aware reader from 0 does not wait out its grace."""
    from hostd.gaps import GapWatch
    seqs = parts.append(6)
    parts.cursors.set("m", "h", seqs[2])
    assert parts.retention().run_once(now=LATER)["events"] == 3
    watch = GapWatch(grace_s=3600, voids_between=parts.log.voids_between)
    page = parts.log.read_after(0, 10)
    assert [d["seq"] for d in watch.contiguous(0, page)] == seqs[3:]
    assert watch.skipped == 0
