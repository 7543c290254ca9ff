"""course_funnel with the modules it asks (grade_distribution, problem_response), on events worked out by hand."""
import json
import uuid
from pathlib import Path

import pytest

from sandbox.errors import BadParameter
from sandbox.testing import ModulesHarness

pytestmark = pytest.mark.timeout(180)

MODULE = Path(__file__).resolve().parents[1]
CONTRIB = MODULE.parent


@pytest.fixture(scope="module")
def harness():
    modules = {name: CONTRIB / name for name in ("course_funnel", "grade_distribution", "problem_response")}
    with ModulesHarness(modules, properties=[CONTRIB / "user_activity"]) as h:
        yield h


def _course() -> str:
    return f"course-v1:Org+F{uuid.uuid4().hex[:8]}+Run"


def _base(course, learner, event_type, source, event):
    return {"event_type": event_type, "event_source": source, "username": f"u{learner}",
            "time": f"2024-03-01T10:00:{learner:02d}+00:00", "context": {"course_id": course, "user_id": learner},
            "event": event}


def _enrol(course, learner, by_staff=False):
    event = _base(course, learner, "edx.course.enrollment.activated", "server",
                  {"course_id": course, "user_id": learner, "mode": "audit"})
    if by_staff:  # staff enrolling a learner: the event's own user is the staff member
        event.update(username="staff", context={"course_id": course, "user_id": 99})
    return event


def _play(course, learner, source="browser"):
    return _base(course, learner, "play_video", source, json.dumps({"id": "v1", "currentTime": 0}))


def _check(course, learner, grade, source="server"):
    problem = f"block-v1:{course.split(':')[1]}+type@problem+block@p1"
    return _base(course, learner, "problem_check", source, {
        "problem_id": problem, "answers": {"p1_2_1": "x"}, "grade": grade, "max_grade": 2,
        "correct_map": {"p1_2_1": {"correctness": "correct" if grade else "incorrect"}},
        "submission": {"p1_2_1": {"answer": "x", "question": "Q?", "input_type": "textline"}}})


def _cohort(course) -> list[dict]:
    # 1 goes all the way; 2 fails its problem (0/2); 3 only watches (on the app); 4 only enrols
    # (by staff); 5 watches and passes but never enrolled; 6 enrols and passes without watching.
    # A browser problem_check is no attempt.
    return [_enrol(course, 1), _play(course, 1), _check(course, 1, 2),
            _enrol(course, 2), _play(course, 2), _check(course, 2, 0),
            _enrol(course, 3), _play(course, 3, source="mobile"), _check(course, 3, 2, source="browser"),
            _enrol(course, 4, by_staff=True),
            _play(course, 5), _check(course, 5, 2),
            _enrol(course, 6), _check(course, 6, 2)]


def _counts(harness, course, **params):
    return [row["learners"] for row in harness.query("course_funnel", course_id=course, **params)]


def test_each_stage_keeps_the_learners_of_the_previous_one_who_did_its_step(harness):
    course = _course()
    harness.send_events(_cohort(course))
    assert harness.query("course_funnel", course_id=course) == [
        {"stage": "enrolled", "learners": 5}, {"stage": "watched", "learners": 3},
        {"stage": "attempted", "learners": 2}, {"stage": "passed", "learners": 1}]


def test_the_pass_threshold_decides_who_passed(harness):
    course = _course()
    harness.send_events(_cohort(course))
    assert _counts(harness, course, pass_threshold=0) == [5, 3, 2, 2]
    assert _counts(harness, course, pass_threshold=1) == [5, 3, 2, 1]


def test_learners_of_other_courses_do_not_count(harness):
    course, other = _course(), _course()
    harness.send_events(_cohort(other))
    assert _counts(harness, course) == [0, 0, 0, 0]


@pytest.mark.parametrize("threshold", ["-0.1", "1.5", "nan"])
def test_a_bad_threshold_names_the_parameter(harness, threshold):
    with pytest.raises(BadParameter) as excinfo:
        harness.query("course_funnel", course_id=_course(), pass_threshold=threshold)
    assert excinfo.value.param == "pass_threshold"


def test_the_view_draws_the_funnel_as_inline_svg(harness):
    course = _course()
    harness.send_events(_cohort(course))
    page = harness.view("course_funnel_view", course_id=course)
    assert "<svg" in page and page.count("<rect") == 4
    assert "<td>watched</td><td>3</td>" in page and "<td>passed</td><td>1</td>" in page


def test_counts_do_not_move_when_events_are_delivered_again(harness):
    course = _course()
    start = harness.host.storage.eventlog.head()
    harness.send_events(_cohort(course))
    before = _counts(harness, course)
    for module in ("course_funnel", "problem_response"):
        assert harness.host.redeliver(module, start, 60)
    assert _counts(harness, course) == before == [5, 3, 2, 1]
