"""time_on_task: its event properties, and the module in a real sandbox on events worked out by hand."""
import uuid
from pathlib import Path

import pytest

from sandbox.errors import BadParameter
from sandbox.events import Event
from sandbox.properties import build_registry
from sandbox.testing import ModuleHarness

pytestmark = pytest.mark.timeout(180)

MODULE = Path(__file__).resolve().parents[1]
EDX_PIPELINE = MODULE.parent / "user_activity"   # evt.edx_pipeline.* comes from its properties.py


# -- properties: what one event tells ------------------------------------------------

@pytest.fixture(scope="module")
def registry():
    return build_registry({"time_on_task": MODULE / "properties.py"}, entry_points=False)


def _props(registry, **raw):
    return Event(raw, {"id": "e"}, properties=registry).time_on_task


@pytest.mark.parametrize(("raw", "expected"), [
    ({"session": "s1", "context": {"session": "s2"}}, "s1"), ({"session": "", "context": {"session": "s2"}}, "s2"),
    ({"session": ""}, None), ({"context": "bogus"}, None), ({"session": 7}, None)])
def test_the_session_is_the_events_own_else_its_contexts(registry, raw, expected):
    assert _props(registry, **raw).session == expected


@pytest.mark.parametrize(("time", "expected"), [
    ("2024-03-01T10:00:00+00:00", 1709287200.0), ("2024-03-01T12:00:00.500000+02:00", 1709287200.5),
    ("2024-03-01T10:00:00", 1709287200.0), ("2024-03-01T10:00:00Z", 1709287200.0), ("yesterday", None), (None, None)])
def test_the_timestamp_is_unix_seconds_utc_without_an_offset(registry, time, expected):
    assert _props(registry, time=time).timestamp == expected


# -- the module ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def harness():
    with ModuleHarness(MODULE, properties=[EDX_PIPELINE]) as h:
        yield h


def _course() -> str:
    return f"course-v1:Org+T{uuid.uuid4().hex[:8]}+Run"


def _event(course, learner, time, session, source="browser"):
    return {"event_type": "seq_goto", "event_source": source, "username": f"u{learner}", "session": session,
            "time": f"2024-03-01T{time}", "context": {"course_id": course, "user_id": learner}}


def _two_learners(course, other_course) -> list[dict]:
    # 1: session a at 10:00, 10:05 and 10:50 (a 45 min gap), sent out of order; session b,
    # one event. Its events in another course and without a session do not count.
    # 2: 10:00:00 UTC, 12:00:30+02:00 (10:00:30 UTC) and 10:01:00 without an offset (UTC).
    return [_event(course, 1, "10:05:00+00:00", "a"), _event(course, 1, "10:00:00+00:00", "a"),
            _event(course, 1, "10:50:00+00:00", "a"), _event(course, 1, "11:00:00+00:00", "b"),
            _event(other_course, 1, "10:10:00+00:00", "a"), _event(course, 1, "10:07:00+00:00", "", source="server"),
            _event(course, 2, "10:00:00+00:00", "c"), _event(course, 2, "12:00:30+02:00", "c"),
            _event(course, 2, "10:01:00", "c")]


def test_gaps_to_the_next_event_of_the_session_are_added_capped(harness):
    course = _course()
    harness.send_events(_two_learners(course, _course()))
    assert harness.query("time_on_task", course_id=course) == [
        {"learner": 1, "seconds": 300 + 1800, "events": 4, "sessions": 2},
        {"learner": 2, "seconds": 60, "events": 3, "sessions": 1}]


def test_the_cap_is_a_parameter(harness):
    course = _course()
    harness.send_events(_two_learners(course, _course()))
    rows = harness.query("time_on_task", course_id=course, cap_minutes=0.5)
    assert [row["seconds"] for row in rows] == [60, 60]


@pytest.mark.parametrize("cap", ["0", "-1", "1441", "inf"])
def test_a_bad_cap_names_the_parameter(harness, cap):
    with pytest.raises(BadParameter) as excinfo:
        harness.query("time_on_task", course_id=_course(), cap_minutes=cap)
    assert excinfo.value.param == "cap_minutes"


def test_the_view_shows_a_chart_from_the_file_store_and_a_table(harness):
    course = _course()
    harness.send_events(_two_learners(course, _course()))
    page = harness.view("time_on_task_view", course_id=course)
    assert '<img src="/fs/time_on_task/' in page
    assert "<td>1</td><td>35.0</td><td>4</td><td>2</td>" in page
    assert any(path.suffix == ".png" for path in harness.fs_root.iterdir())
    assert "No sessions yet" in harness.view("time_on_task_view", course_id=_course())


def test_answers_do_not_move_when_events_are_delivered_again(harness):
    course = _course()
    start = harness.log_head()
    harness.send_events(_two_learners(course, _course()))
    before = harness.query("time_on_task", course_id=course)
    assert harness.redeliver(start) >= 9
    assert harness.query("time_on_task", course_id=course) == before
