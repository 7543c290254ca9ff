"""``hostd demo``: a deterministic stream in real edX shapes, and a truth the events bear out.

The truth is checked against the events by recomputing it from them here, the
way an analytics module would (seconds watched from play/pause/seek/stop,
attempts from the server ``problem_check`` events, activity per day). The
shapes are compared with real Open edX tracking logs from ``../shared/data``
(skipped when absent). The last test loads a stream into a real ``hostd
serve`` running the irt module.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import numpy
import pytest
from click.testing import CliRunner

from hostd.demo import generate
from hostd.demo.command import EVENTS_FILE, TRUTH_FILE, demo
from hostd.logfile import LogEvent, read_events

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
REAL_LOGS = [DATA / "edx-analytics-pipeline" / name for name in
             ("user_activity_tracking.log", "video_timeline.log", "problem_response_tracking.log")]
REAL_LOGS.append(DATA / "event-routing-backends" / "tracking.log")
VIDEO_TYPES = ("load_video", "play_video", "pause_video", "seek_video", "stop_video")


def _payload(event: dict):
    """:returns: the event's payload, JSON-decoded if it is a JSON string; None if it is not JSON."""
    if not isinstance(event["event"], str):
        return event["event"]
    try:
        return json.loads(event["event"])
    except ValueError:
        return None  # the browser's problem_check: a query string


def _kind(event: dict) -> str:
    """Event type, with the source for problem_check (the browser and server ones differ)."""
    if event["event_type"] == "problem_check":
        return f"problem_check/{event['event_source']}"
    return "page_view" if event["event_type"].startswith("/courses/") else event["event_type"]


@pytest.fixture(scope="module")
def course():
    """300 learners over 4 weeks."""
    return generate(seed=11, learners=300, weeks=4)


# -- determinism ------------------------------------------------------------------

def test_a_seed_always_gives_the_same_stream_and_truth_and_another_seed_another():
    first, again, other = (generate(seed=s, learners=25, weeks=2) for s in (5, 5, 6))
    assert first.events == again.events and first.truth == again.truth
    assert first.events != other.events
    assert [p["b"] for p in first.truth["problems"].values()] != [p["b"] for p in other.truth["problems"].values()]


def test_a_learner_behaves_the_same_however_many_others_enrol():
    few, many = generate(seed=2, learners=10, weeks=2), generate(seed=2, learners=30, weeks=2)
    names = set(few.truth["learners"])
    assert [e for e in many.events if e["username"] in names] == few.events
    assert {u: many.truth["attempts"][u] for u in few.truth["attempts"]} == few.truth["attempts"]


def test_the_command_writes_the_same_files_for_a_seed(tmp_path):
    runner = CliRunner()
    outputs = []
    for name in ("one", "two"):
        result = runner.invoke(demo, ["--seed", "3", "--learners", "20", "--weeks", "1", "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        assert "events/s" in result.output and "20 enrolled" in result.output
        outputs.append([(tmp_path / name / f).read_bytes() for f in (EVENTS_FILE, TRUTH_FILE)])
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("args, wrong", [(["--course-id", "DemoX/IRT/2026"], "--course-id"),
                                         (["--start", "January"], "--start"),
                                         (["--learners", "0"], "--learners"),
                                         (["--load", "--url", "ftp://x"], "--url")])
def test_the_command_refuses_bad_options_naming_them(tmp_path, args, wrong):
    result = CliRunner().invoke(demo, ["--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert wrong in result.output
    assert not (tmp_path / EVENTS_FILE).exists()


# -- the stream --------------------------------------------------------------------

def test_the_log_reads_back_event_for_event_with_no_two_events_alike(course, tmp_path):
    result = CliRunner().invoke(demo, ["--seed", "11", "--learners", "300", "--weeks", "4", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    items = list(read_events(tmp_path / EVENTS_FILE))
    assert all(isinstance(item, LogEvent) for item in items)
    assert [item.event for item in items] == course.events
    identities = {hashlib.sha256(json.dumps(e, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
                  for e in course.events}
    assert len(identities) == len(course.events)  # none would be taken for a duplicate
    assert json.loads((tmp_path / TRUTH_FILE).read_text()) == course.truth


def test_events_are_in_time_order_with_every_kind_present(course):
    times = [datetime.fromisoformat(e["time"]) for e in course.events]
    assert times == sorted(times)
    assert all(t.utcoffset() == timedelta(0) for t in times)
    kinds = Counter(_kind(e) for e in course.events)
    for kind in ("edx.course.enrollment.activated", "page_view", "seq_next", "page_close",
                 "problem_check/browser", "problem_check/server", *VIDEO_TYPES):
        assert kinds[kind] > 0, kind
    assert kinds["problem_check/browser"] == kinds["problem_check/server"]
    assert kinds["edx.course.enrollment.activated"] == 300


@pytest.fixture(scope="module")
def real_events():
    if not DATA.is_dir():
        pytest.skip(f"real test data not found at {DATA} (the workspace's shared/data folder "
                    "beside the repository; see its SOURCES.md)")
    found = defaultdict(list)
    for path in REAL_LOGS:
        for item in read_events(path):
            if isinstance(item, LogEvent) and "event_type" in item.event:
                found[_kind(item.event)].append(item.event)
    return found


@pytest.mark.parametrize("kind", ["edx.course.enrollment.activated", "page_close", "problem_check/browser",
                                  "problem_check/server", *VIDEO_TYPES])
def test_events_have_every_field_real_edx_events_of_their_kind_have(course, real_events, kind):
    ours = [e for e in course.events if _kind(e) == kind]
    real = real_events[kind]
    assert real, f"no real {kind} event to compare with"
    top = set.intersection(*(set(e) for e in real))
    payload_keys = [set(p) for p in map(_payload, real) if isinstance(p, dict)]
    payload = set.intersection(*payload_keys) if payload_keys else set()
    for event in ours:
        assert top <= set(event), (kind, top - set(event))
        assert type(event["event"]) is type(real[0]["event"]), kind  # a JSON string in browser events
        assert event["event_source"] == real[0]["event_source"]
        assert {"user_id", "org_id", "course_id", "path"} <= set(event["context"])
        if payload:
            assert payload <= set(_payload(event)), (kind, payload - set(_payload(event)))


def test_server_problem_checks_carry_grade_attempts_and_answers(course):
    problems = course.truth["problems"]
    for event in (e for e in course.events if _kind(e) == "problem_check/server"):
        payload = event["event"]
        problem = problems[payload["problem_id"]]
        assert payload["max_grade"] == problem["max_grade"] == len(payload["answers"]) == len(payload["submission"])
        assert 0 <= payload["grade"] <= payload["max_grade"]
        assert 1 <= payload["attempts"] <= problem["max_attempts"]
        assert payload["success"] == ("correct" if payload["grade"] == payload["max_grade"] else "incorrect")
        assert sum(s["correct"] for s in payload["submission"].values()) == payload["grade"]
        assert event["context"]["module"]["usage_key"] == payload["problem_id"]


def test_video_positions_stay_within_the_video(course):
    durations = {block: v["duration"] for block, v in course.truth["videos"].items()}
    for event in (e for e in course.events if e["event_type"] in VIDEO_TYPES):
        payload = _payload(event)
        assert payload["duration"] == durations[payload["id"]]
        for key in ("currentTime", "old_time", "new_time"):
            if key in payload:
                assert 0 <= payload[key] <= payload["duration"], payload


# -- the truth, recomputed from the events ------------------------------------------------

def _viewings(events):
    """:returns: ``{(user, video): [(start, end), ...]}``: each play up to the pause, seek or stop ending it."""
    playing, viewings = {}, defaultdict(list)
    for event in events:
        if event["event_type"] not in VIDEO_TYPES:
            continue
        payload = _payload(event)
        key = (event["username"], payload["id"])
        if event["event_type"] == "play_video":
            assert key not in playing, f"{key} played twice without a pause"
            playing[key] = payload["currentTime"]
        elif event["event_type"] in ("pause_video", "stop_video", "seek_video"):
            end = payload["old_time"] if event["event_type"] == "seek_video" else payload["currentTime"]
            viewings[key].append((playing.pop(key), end))
    assert not playing, f"plays never closed: {sorted(playing)[:3]}"
    return viewings


def test_seconds_watched_are_what_the_video_events_say(course):
    truth = course.truth
    viewings = _viewings(course.events)
    recomputed = {key: sum(end - start for start, end in spans) for key, spans in viewings.items()}
    expected = {(user, video): s for user, videos in truth["seconds_watched"].items() for video, s in videos.items()}
    assert set(recomputed) == set(expected)
    for key, seconds in recomputed.items():
        assert seconds == pytest.approx(expected[key], abs=2e-3), key
    for block, video in truth["videos"].items():
        total = sum(s for (user, v), s in recomputed.items() if v == block)
        assert video["total_viewed_seconds"] == pytest.approx(total, abs=0.05)


def test_video_timelines_are_what_the_viewings_cover(course):
    viewings = _viewings(course.events)
    for block, video in course.truth["videos"].items():
        length = video["segment_length"]
        views, users = Counter(), defaultdict(set)
        for (user, v), spans in viewings.items():
            if v != block:
                continue
            for start, end in spans:
                for segment in range(int(start // length), math.ceil(end / length)):
                    views[segment] += 1
                    users[segment].add(user)
        assert video["timeline"] == [{"segment": s, "num_users": len(users[s]), "num_views": views[s]}
                                     for s in sorted(views)]
        assert video["users_at_start"] == len(users[0])
        assert video["users_at_end"] == len(users[math.ceil(video["duration"] / length) - 1])
        assert video["viewers"] == len({user for (user, v) in viewings if v == block})


def test_attempts_are_the_server_problem_checks(course):
    truth = course.truth
    checks = defaultdict(list)
    for event in (e for e in course.events if _kind(e) == "problem_check/server"):
        checks[(event["username"], event["event"]["problem_id"])].append(event)
    per_problem = Counter()
    for (user, problem), events in checks.items():
        record = truth["attempts"][user][problem]
        assert [e["event"]["attempts"] for e in events] == list(range(1, record["attempts"] + 1))
        assert record["first_correct"] == (events[0]["event"]["success"] == "correct")
        assert record["correct"] == (events[-1]["event"]["success"] == "correct")
        assert record["score"] == events[-1]["event"]["grade"]
        assert record["answers"] == {aid: {k: part[k] for k in ("question", "answer", "correct")}
                                     for aid, part in events[-1]["event"]["submission"].items()}
        assert (record["first_attempt_date"], record["last_attempt_date"]) == (events[0]["time"], events[-1]["time"])
        per_problem[problem] += len(events)
    assert sum(len(r) for r in truth["attempts"].values()) == len(checks)
    assert {p: t["attempts"] for p, t in truth["problems"].items() if t["attempts"]} == dict(per_problem)


def test_counts_and_daily_activity_are_what_the_events_say(course):
    truth, events = course.truth, course.events
    by_user = defaultdict(Counter)
    for event in events:
        by_user[event["username"]][_kind(event)] += 1
    assert truth["counts"]["enrolled"] == sum(c["edx.course.enrollment.activated"] for c in by_user.values())
    assert truth["counts"]["active"] == sum(1 for c in by_user.values() if c.total() > 1)  # beyond enrolling
    assert truth["counts"]["watched"] == sum(1 for c in by_user.values() if c["play_video"])
    assert truth["counts"]["attempted"] == sum(1 for c in by_user.values() if c["problem_check/server"])
    assert truth["counts"]["events"] == len(events)
    best = defaultdict(dict)
    for event in (e for e in events if _kind(e) == "problem_check/server"):
        scores = best[event["username"]]
        scores[event["event"]["problem_id"]] = max(scores.get(event["event"]["problem_id"], 0), event["event"]["grade"])
    most = sum(p["max_grade"] for p in truth["problems"].values())
    for user, info in truth["learners"].items():
        assert info["grade"] == pytest.approx(sum(best[user].values()) / most, abs=1e-6), user
        assert info["passed"] == (info["grade"] >= truth["course"]["pass_grade"])
    assert truth["counts"]["passed"] == sum(info["passed"] for info in truth["learners"].values()) > 0
    daily = defaultdict(lambda: defaultdict(Counter))
    for event in events:
        day = daily[event["username"]][event["time"][:10]]
        day["ACTIVE"] += 1
        day["PLAY_VIDEO"] += event["event_type"] == "play_video"
        day["ATTEMPT_PROBLEM"] += _kind(event) == "problem_check/server"
    assert truth["daily_activity"] == {u: {d: dict(c) for d, c in days.items()} for u, days in daily.items()}
    assert sum(d["events"] for d in truth["per_day"].values()) == len(events)


def test_learners_drop_out_and_stay_out(course):
    truth = course.truth
    start = datetime.fromisoformat(truth["generator"]["start"] + "T00:00:00+00:00")
    last_seen = {}
    for event in course.events:
        last_seen[event["username"]] = datetime.fromisoformat(event["time"])
    weeks = truth["generator"]["weeks"]
    dropped = [u for u, info in truth["learners"].items() if info["last_week"] is not None
               and info["last_week"] < weeks - 1]
    assert 0.1 * len(truth["learners"]) < len(dropped) < 0.9 * len(truth["learners"])
    for user, info in truth["learners"].items():
        if info["last_week"] is not None:
            assert last_seen[user] < start + timedelta(weeks=info["last_week"] + 1, days=1), user


def test_first_attempts_follow_the_item_difficulties(course):
    problems = course.truth["problems"]
    rates = [(p["first_correct"] / p["attempted"], p["b"]) for p in problems.values() if p["attempted"] >= 30]
    assert len(rates) == len(problems)
    assert numpy.corrcoef(numpy.array(rates).T)[0, 1] < -0.7


# -- loading into a running daemon ----------------------------------------------------------

@pytest.mark.e2e
def test_load_feeds_a_running_hostd_whose_irt_module_counts_what_the_truth_says(tmp_path):
    from running_hostd import Daemon, launch, stop_daemon, wait_announced, wait_until
    modules = tmp_path / "modules"
    shutil.copytree(REPO / "contrib_modules" / "irt", modules / "irt", ignore=shutil.ignore_patterns("tests"))
    config = tmp_path / "hostd.toml"
    config.write_text("[supervisor]\nbackoff_initial_s = 0.2\n", encoding="utf-8")
    data_dir = Path(tempfile.mkdtemp(prefix="insights-e2e-"))  # short: unix socket paths are
    daemon = Daemon(*launch(tmp_path, data_dir, config, modules), data_dir)
    try:
        wait_announced(daemon.process, daemon.log_path)
        wait_until(lambda: daemon.get("/healthz").json()["modules"] == {"running": 1}, 60,
                   what="irt running in hostd and its web workers")
        command = [sys.executable, "-c", "from hostd.cli import main; main()", "demo", "--seed", "4",
                   "--learners", "40", "--weeks", "1", "--out", str(tmp_path / "out"), "--load",
                   "--url", daemon.base, "--batch-size", "300", "--progress"]
        first = subprocess.run(command, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
        assert first.returncode == 0, (first.stdout, first.stderr)
        truth = json.loads((tmp_path / "out" / TRUTH_FILE).read_text())
        events = truth["counts"]["events"]
        assert f"accepted {events}, duplicates 0" in first.stdout
        assert "load" in first.stderr and "ev" in first.stderr  # the progress bar
        second = subprocess.run(command, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
        assert f"accepted 0, duplicates {events}" in second.stdout
        wait_until(lambda: daemon.modules()["irt"]["lag"] == 0, 120, what="irt caught up")
        items = {item["problem_id"]: item for item in daemon.query("irt_items")}
        assert {p: (t["attempted"], t["attempts"]) for p, t in truth["problems"].items() if t["attempted"]} == \
            {p: (i["n_learners"], i["n_responses"]) for p, i in items.items()}
    finally:
        stop_daemon(daemon)
