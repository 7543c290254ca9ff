"""Every bundled module stays exact when its sandbox is killed mid-stream (at-least-once delivery).

Two real ``hostd serve`` over ``contrib_modules`` take the same few thousand
events, made from the Open edX analytics pipeline's test logs. One of them
has every sandbox with event handlers killed (SIGKILL) several times while the
events stream in, so batches a handler had begun are delivered to it again;
once both caught up, every module's queries must answer the same in both.

A sandbox is killed as soon as it is seen behind the log, so usually in the
middle of a batch. Whether a kill lands between a handler's writes and its
acknowledgement (the case that makes a ``$inc`` count twice) is up to timing,
except for ``dump_to_db``: its sandbox is first frozen (SIGSTOP) at a moment
its store holds a batch hostd has not seen acknowledged, when one is caught.
The modules' own tests make that case certain for each with
``ModuleHarness.redeliver``; this test checks the whole set under a real
daemon and real crashes.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pymongo
import pytest

from hostd.logfile import LogEvent, read_events
from running_hostd import start_daemon, stop_daemon, wait_until

pytestmark = pytest.mark.timeout(1500)

ROOT = Path(__file__).resolve().parents[1]
CONTRIB = ROOT / "contrib_modules"
DATA = ROOT.parent / "shared" / "data" / "edx-analytics-pipeline"
LOGS = ("problem_response_tracking.log", "user_activity_tracking.log", "video_timeline.log")
COPIES = 4        # the logs hold about 1,000 events; four copies of their learners make a few thousand
CHUNK = 1000      # events per POST: each kill round has a chunk's worth of work to interrupt
MODULES = {path.name for path in CONTRIB.iterdir() if (path / "__init__.py").is_file()}


def _copy(event: dict, copy: int) -> dict:
    """The event as learner copy ``copy`` would have sent it: other names, ids and sessions (0: itself)."""
    event = json.loads(json.dumps(event))
    if copy == 0:
        return event
    if isinstance(event.get("username"), str) and event["username"]:
        event["username"] += f".{copy}"
    if isinstance(event.get("session"), str) and event["session"]:
        event["session"] += f".{copy}"
    for holder in (event.get("context"), event.get("event")):
        if isinstance(holder, dict) and isinstance(holder.get("user_id"), int):
            holder["user_id"] += 100_000 * copy
    return event


def _stream() -> list[dict]:
    originals = [item.event for name in LOGS for item in read_events(DATA / name) if isinstance(item, LogEvent)]
    return [_copy(event, copy) for copy in range(COPIES) for event in originals]


def _handlers(daemon) -> dict:
    """:returns: ``/modules`` entries of the modules that have event handlers."""
    return {name: entry for name, entry in daemon.modules().items() if entry["handlers"]}


def _freeze_after_writes(daemon, store) -> int | None:
    """Stop (SIGSTOP) ``dump_to_db``'s sandbox at a moment its store holds more events than hostd saw it
    acknowledge: a batch written but not answered for, which a kill then makes hostd deliver again.

    Tried while it works through the events it was given; left running if no such moment was caught.

    :returns: the pid stopped, or None.
    """
    stored = store["mod_dump_to_db"]["event_log"]
    while True:
        entry = daemon.modules()["dump_to_db"]
        if entry["lag"] == 0 or entry["state"] != "running" or not entry["pid"]:
            return None
        os.kill(entry["pid"], signal.SIGSTOP)
        acknowledged = sum(h["handled"] for h in daemon.modules()["dump_to_db"]["handlers"].values())
        if stored.estimated_document_count() > acknowledged:
            return entry["pid"]
        os.kill(entry["pid"], signal.SIGCONT)


def _kill_while_behind(daemon) -> set:
    """SIGKILL each sandbox with handlers as soon as it is seen behind the log (so likely in the middle
    of a batch), then wait until each killed one runs again.

    :returns: the modules killed (one that caught up before it was seen behind is spared).
    """
    killed = {}
    while True:
        entries = _handlers(daemon)
        behind = {name: e["pid"] for name, e in entries.items()
                  if name not in killed and e["lag"] > 0 and e["state"] == "running" and e["pid"]}
        if not behind:
            break
        for name, pid in behind.items():
            os.kill(pid, signal.SIGKILL)
        killed.update(behind)

    def restarted():
        now = _handlers(daemon)
        return all(now[name]["state"] == "running" and now[name]["pid"] not in (None, pid)
                   for name, pid in killed.items())
    wait_until(restarted, 120, 0.2, what="the killed sandboxes running again")
    return set(killed)


def _feed(daemon, events, kill: bool) -> dict:
    """POST the events in chunks; with ``kill``, kill the handlers' sandboxes while they work through each.

    :returns: ``{module: how many times it was killed}``.
    """
    kills = {}
    store = pymongo.MongoClient((daemon.data_dir / "store.url").read_text().strip())
    try:
        for start in range(0, len(events), CHUNK):
            response = daemon.post("/event", json=events[start:start + CHUNK])
            assert response.status_code == 202, response.text
            if kill:
                frozen = _freeze_after_writes(daemon, store)
                killed = _kill_while_behind(daemon)
                if frozen and "dump_to_db" not in killed:  # its answer arrived after all: let it go on
                    os.kill(frozen, signal.SIGCONT)
                for name in killed:
                    kills[name] = kills.get(name, 0) + 1
    finally:
        store.close()

    def caught_up():
        modules = daemon.modules()
        return all(e["state"] == "running" and e["lag"] == 0 for e in modules.values()) and modules
    modules = wait_until(caught_up, 600, 0.5, what="every module caught up")
    assert {name: e["dead_letters"] for name, e in modules.items() if e["dead_letters"]} == {}
    return kills


def _answers(daemon, events) -> dict:
    """Every bundled module's queries over what the events name: ``{call: answer}``."""
    courses = sorted({e["context"]["course_id"] for e in events
                      if isinstance(e.get("context"), dict) and isinstance(e["context"].get("course_id"), str)
                      and e["context"]["course_id"]})
    users = sorted({e["username"] for e in events if isinstance(e.get("username"), str) and e["username"]})
    calls = [("event_count", {}), ("user_count", {}), ("dumped_count", {}), ("dumped_events", {"limit": 1000}),
             ("verbs_per_day", {}), ("video_info", {}), ("get_grades", {"course": "x"}), ("tincan_mapping", {})]
    calls += [("user_event_count", {"user": user}) for user in users]
    for course in courses:
        calls += [(name, {"course_id": course}) for name in (
            "user_activity", "problem_responses", "learner_grades", "grade_distribution", "course_funnel",
            "time_on_task")]
    answers = {json.dumps(call, sort_keys=True): daemon.query(call[0], **call[1]) for call in calls}
    for row in answers[json.dumps(["video_info", {}])]:
        params = {"pipeline_video_id": row["pipeline_video_id"]}
        answers[json.dumps(["video_timeline", params])] = daemon.query("video_timeline", **params)
    return answers


@pytest.mark.skipif(not DATA.is_dir(), reason=f"the Open edX pipeline's test logs are not at {DATA}")
def test_every_module_answers_the_same_after_its_sandboxes_were_killed_mid_stream(tmp_path):
    events = _stream()
    assert len(events) > 4000
    answers, kills = [], {}
    for run in ("calm", "killed"):
        (tmp_path / run).mkdir()
        daemon = start_daemon(tmp_path / run, CONTRIB, MODULES, set())
        try:
            kills[run] = _feed(daemon, events, kill=run == "killed")
            answers.append(_answers(daemon, events))
        finally:
            stop_daemon(daemon)
    calm, killed = answers
    assert kills["killed"], "no sandbox was ever seen behind the log, so none was killed"
    # The streams were worth comparing: every event counted, a report per course, learners in funnels.
    assert calm[json.dumps(["dumped_count", {}])] == calm[json.dumps(["event_count", {}])] > 4000
    assert any(v for k, v in calm.items() if k.startswith('["problem_responses"'))
    assert any(v for k, v in calm.items() if k.startswith('["time_on_task"'))
    different = sorted(call for call in calm if calm[call] != killed.get(call))
    assert different == [], f"{len(different)} answers differ after the kills, e.g. {different[:5]}"
