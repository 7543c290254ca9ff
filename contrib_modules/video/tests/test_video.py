"""video in a real sandbox: the pipeline's viewing rules, on made-up events and on its own test log."""
import json
import uuid
from pathlib import Path

import pytest

from hostd.logfile import LogEvent, read_events
from sandbox.errors import BadParameter
from sandbox.testing import ModuleHarness

pytestmark = pytest.mark.timeout(180)

MODULE = Path(__file__).resolve().parents[1]
EDX_PIPELINE = MODULE.parent / "user_activity"   # evt.edx_pipeline.* comes from its properties.py
DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "edx-analytics-pipeline"
LOG = DATA / "video_timeline.log"


@pytest.fixture(scope="module")
def harness():
    with ModuleHarness(MODULE, properties=[EDX_PIPELINE]) as h:
        yield h


def _video() -> tuple[str, str]:
    course = f"course-v1:Org+V{uuid.uuid4().hex[:8]}+Run"
    return course, "video-1"


def _event(course, module, event_type, second, user_id=7, **data):
    """A browser video event at ``second`` seconds past 10:00, its data a JSON string as the player sends."""
    return {"event_type": event_type, "event_source": "browser", "username": f"u{user_id}",
            "time": f"2024-03-01T10:{second // 60:02d}:{second % 60:02d}.000000+00:00",
            "context": {"course_id": course, "user_id": user_id}, "page": "https://lms.org/x",
            "event": json.dumps({"id": module, "code": "html5", **data})}


def _play(course, module, second, at, user_id=7, **data):
    return _event(course, module, "play_video", second, user_id, currentTime=at, **data)


def _pause(course, module, second, at, user_id=7, **data):
    return _event(course, module, "pause_video", second, user_id, currentTime=at, **data)


def _timeline(harness, course, module):
    return [(r["segment"], r["num_users"], r["num_views"])
            for r in harness.query("video_timeline", pipeline_video_id=f"{course}|{module}")]


def _info(harness, course, module):
    return next(r for r in harness.query("video_info") if r["pipeline_video_id"] == f"{course}|{module}")


# -- viewings ----------------------------------------------------------------------

def test_viewings_shorter_than_a_quarter_second_or_backwards_are_dropped(harness):
    course, module = _video()
    harness.send_events([
        _play(course, module, 0, 10), _pause(course, module, 1, 10.2),         # 0.2 s: dropped
        _play(course, module, 2, 20), _pause(course, module, 3, 20.25),        # 0.25 s: segment 4
        _play(course, module, 4, 40), _pause(course, module, 5, 35)])          # ends before it starts
    assert _timeline(harness, course, module) == [(4, 1, 1)]


def test_a_viewing_past_the_end_of_a_known_duration_is_dropped(harness):
    course, module = _video()
    harness.send_events([
        _play(course, module, 0, 0, duration=20), _pause(course, module, 1, 21.5, duration=20),  # > 20 + 1
        _play(course, module, 2, 12, duration=20), _pause(course, module, 3, 21, duration=20)])  # = 20 + 1
    # Only 12 -> 21 is kept: segments 2, 3 and 4; the last segment is 20 // 5 = 4.
    assert _timeline(harness, course, module) == [(2, 1, 1), (3, 1, 1), (4, 1, 1)]
    info = _info(harness, course, module)
    # users_at_end: the segment of max(20 - 30, 0.95 * 20) = 19 s, segment 3: one learner.
    assert (info["duration"], info["users_at_start"], info["users_at_end"], info["total_viewed_seconds"]) == (
        20, 0, 1, 15)


def test_a_second_play_restarts_the_viewing_and_events_outside_one_are_ignored(harness):
    course, module = _video()
    harness.send_events([
        _pause(course, module, 0, 3),                                   # no viewing yet: ignored
        _play(course, module, 1, 0), _play(course, module, 2, 6),       # the viewing starts again at 6
        _pause(course, module, 3, 8),
        _event(course, module, "stop_video", 4, currentTime=30)])       # nothing to end: ignored
    assert _timeline(harness, course, module) == [(1, 1, 1)]


def test_events_are_paired_in_time_order_whatever_order_they_arrive_in(harness):
    course, module = _video()
    harness.send_events([_pause(course, module, 10, 12)])
    assert _timeline(harness, course, module) == []
    harness.send_events([_play(course, module, 5, 1)])
    assert _timeline(harness, course, module) == [(0, 1, 1), (1, 1, 1), (2, 1, 1)]


def test_an_unknown_duration_ends_where_learners_drop_sharply(harness):
    course, module = _video()
    events = []
    for user in range(20):
        events += [_play(course, module, 0, 0, user_id=100 + user), _pause(course, module, 20, 14, user_id=100 + user)]
    events += [_play(course, module, 0, 0, user_id=99), _pause(course, module, 20, 19, user_id=99)]
    harness.send_events(events)
    # Segments 0-2 have 21 learners, segment 3 one: 1 <= 21 * 0.05, so the video ends
    # at segment 2 and segment 3 is not shown. Its duration is (2 + 1) * 5 - 1 = 14;
    # the end is at max(14 - 30, 0.95 * 14) = 13.3 s, segment 2: 21 learners there;
    # 63 views of 5 s.
    assert _timeline(harness, course, module) == [(0, 21, 21), (1, 21, 21), (2, 21, 21)]
    assert _info(harness, course, module) == {
        "pipeline_video_id": f"{course}|{module}", "course_id": course, "encoded_module_id": module,
        "duration": 14, "segment_length": 5, "users_at_start": 21, "users_at_end": 21,
        "total_viewed_seconds": 315}


def test_events_without_user_course_module_or_valid_offsets_are_dropped(harness):
    course, module = _video()
    no_user = _play(course, module, 0, 0, user_id=None)
    harness.send_events([
        no_user, _pause(course, module, 1, 9, user_id=None),
        _play(course, "  ", 0, 0), _pause(course, "  ", 1, 9),
        _play(course, module, 0, "soon", user_id=8), _pause(course, module, 1, 9, user_id=8),
        _play(course, module, 0, 0, user_id=9), _pause(course, module, 1, 36001, user_id=9),
        _play(course, module, 0, 0, user_id=10), _pause(course, module, 1, 4, user_id=10)])
    assert _timeline(harness, course, module) == [(0, 1, 1)]


def test_the_view_charts_the_timeline(harness):
    course, module = _video()
    harness.send_events([_play(course, module, 0, 0), _pause(course, module, 9, 9)])
    page = harness.view("video_view", pipeline_video_id=f"{course}|{module}")
    assert "duration 9 s, 1 learners at the start, 1 at the end, 10 s watched" in page
    png = harness.fs_root / page.split('<img src="/fs/video/')[1].split("?")[0]
    assert png.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(BadParameter):
        harness.view("video_view", pipeline_video_id="no bar")


# -- at-least-once delivery -------------------------------------------------------

def test_events_delivered_again_change_nothing(harness):
    course, module = _video()
    start = harness.log_head()
    harness.send_events([_play(course, module, 0, 0), _pause(course, module, 9, 9),
                         _play(course, module, 10, 9), _pause(course, module, 20, 12)])
    # 0 -> 9: segments 0-1; 9 -> 12: segments 1-2.
    assert _timeline(harness, course, module) == [(0, 1, 1), (1, 1, 2), (2, 1, 1)]
    info = _info(harness, course, module)
    assert harness.redeliver(start) == 4
    assert harness.redeliver(start + 2) == 2
    assert _timeline(harness, course, module) == [(0, 1, 1), (1, 1, 2), (2, 1, 1)]
    assert _info(harness, course, module) == info


# -- the pipeline's own test log ------------------------------------------------------

A = "edX/DemoX/Demo_Course|i4x-edX-DemoX-video-3cb54a11efae4ccc8a0aade24d14b255"
B = "edX/DemoX/Demo_Course|i4x-edX-DemoX-video-8c0028eb2a724f48a074bc184cd8635f"
C = "course-v1:edX+DemoX+Test_2014|0b9e39477cf34507a7a48f74be381fdd"
D = "course-v1:edX+DemoX+Test_2015|0b9e39477cf34507a7a48f74be381fdd1"


@pytest.fixture(scope="module")
def pipeline_log():
    if not LOG.is_file():
        pytest.skip(f"real test data not found at {LOG}")
    items = list(read_events(LOG))
    assert all(isinstance(item, LogEvent) for item in items)  # its # and blank lines give nothing
    with ModuleHarness(MODULE, properties=[EDX_PIPELINE]) as h:
        assert h.send_events([item.event for item in items])["accepted"] == len(items) == 18
        yield h


def test_the_pipeline_log_timelines(pipeline_log):
    # Video A, no duration in its events (unknown), by time:
    # * user 10001: play 0, seek 14.23 -> 7.35: viewing 0-14.23 (segments 0-2); play
    #   (7.345, from the seek), seek 14.23 -> 17: viewing 7.35-14.23 (1-2); play says 14
    #   but the seek moved to 17: viewing 17-21.4 (3-4) ended by a pause; play 21.4,
    #   pause 24.9: viewing 21.4-24.9 (4).
    # * user 10002: 0-9.9 (0-1); user 10003: 15.3-24.9 (3-4).
    # Views 2, 3, 2, 2, 3 and learners 2, 2, 1, 2, 2 over segments 0-4.
    assert _rows(pipeline_log, A) == [(0, 2, 2), (1, 2, 3), (2, 1, 2), (3, 2, 2), (4, 2, 3)]
    # Video B: user 10001 from 10 to 20 s: segments 2-4.
    assert _rows(pipeline_log, B) == [(2, 1, 1), (3, 1, 1), (4, 1, 1)]
    # C: 0-4 s ended by a stop; D: the same, with a duration of 444 s.
    assert _rows(pipeline_log, C) == [(0, 1, 1)]
    assert _rows(pipeline_log, D) == [(0, 1, 1)]


def _rows(harness, video_id):
    return [(r["segment"], r["num_users"], r["num_views"])
            for r in harness.query("video_timeline", pipeline_video_id=video_id)]


def test_the_pipeline_log_videos(pipeline_log):
    # A: unknown duration; no sharp drop, so the last segment is 4 and the duration
    #    (4 + 1) * 5 - 1 = 24; the end is at max(24 - 30, 0.95 * 24) = 22.8 s, segment
    #    4: 2 learners; 2 learners in segment 0; (2+3+2+2+3) * 5 = 60 s.
    # B: last segment 4, duration 24, nobody in segment 0, 1 in segment 4, 3 * 5 = 15 s.
    # C: last segment 0, duration 4; the end at max(-26, 3.8) s is segment 0: 1 learner.
    # D: duration 444 from its events; the end at max(414, 421.8) s is segment 84: nobody.
    # (The same figures as the pipeline's own acceptance test for this log.)
    assert [tuple(r.values()) for r in pipeline_log.query("video_info")] == [
        (C, C.split("|")[0], C.split("|")[1], 4, 5, 1, 1, 5),
        (D, D.split("|")[0], D.split("|")[1], 444, 5, 1, 0, 5),
        (A, A.split("|")[0], A.split("|")[1], 24, 5, 2, 2, 60),
        (B, B.split("|")[0], B.split("|")[1], 24, 5, 0, 1, 15)]
    assert list(pipeline_log.query("video_info")[0]) == [
        "pipeline_video_id", "course_id", "encoded_module_id", "duration", "segment_length",
        "users_at_start", "users_at_end", "total_viewed_seconds"]


def test_the_pipeline_log_fed_again_gives_the_same_answers(pipeline_log):
    before = (pipeline_log.query("video_info"), [_rows(pipeline_log, v) for v in (A, B, C, D)])
    assert pipeline_log.send_events([item.event for item in read_events(LOG)])["duplicates"] == 18
    assert pipeline_log.redeliver(0) == 18
    assert (pipeline_log.query("video_info"), [_rows(pipeline_log, v) for v in (A, B, C, D)]) == before
