"""grade_distribution over problem_response, each in a real sandbox, on events worked out by hand."""
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
    modules = {"grade_distribution": MODULE, "problem_response": CONTRIB / "problem_response"}
    with ModulesHarness(modules, properties=[CONTRIB / "user_activity"]) as h:
        yield h


def _course() -> str:
    return f"course-v1:Org+G{uuid.uuid4().hex[:8]}+Run"


def _check(course, username, problem, grade, max_grade, time="10:00:00", source="server"):
    """A problem_check with one text answer."""
    problem_id = f"block-v1:{course.split(':')[1]}+type@problem+block@{problem}"
    answer = f"{problem}_2_1"
    return {"event_type": "problem_check", "event_source": source, "username": username,
            "time": f"2024-03-01T{time}+00:00", "context": {"course_id": course, "user_id": sum(map(ord, username))},
            "event": {"problem_id": problem_id, "answers": {answer: "x"}, "grade": grade, "max_grade": max_grade,
                      "correct_map": {answer: {"correctness": "correct" if grade else "incorrect"}},
                      "submission": {answer: {"answer": "x", "question": "Q?", "input_type": "textline"}}}}


def _three_learners(course) -> list[dict]:
    # ann: p1 0/2 then 1/2 (the latest counts), p2 2/2: 3 of 4 points. bob: p1 2/2. cat: p1 0/2.
    # A browser problem_check is no attempt, whatever it says.
    return [_check(course, "ann", "p1", 0, 2, "10:00:00"), _check(course, "ann", "p1", 1, 2, "10:05:00"),
            _check(course, "ann", "p2", 2, 2), _check(course, "bob", "p1", 2, 2), _check(course, "cat", "p1", 0, 2),
            _check(course, "cat", "p1", 2, 2, "11:00:00", source="browser")]


def test_a_grade_is_the_share_of_the_points_of_the_latest_attempts(harness):
    course = _course()
    harness.send_events(_three_learners(course))
    assert harness.query("learner_grades", course_id=course) == [
        {"username": "ann", "score": 3.0, "max_score": 4.0, "grade": 0.75},
        {"username": "bob", "score": 2.0, "max_score": 2.0, "grade": 1.0},
        {"username": "cat", "score": 0.0, "max_score": 2.0, "grade": 0.0}]


def test_the_distribution_counts_learners_per_range_the_top_one_holding_full_marks(harness):
    course = _course()
    harness.send_events(_three_learners(course))
    assert harness.query("grade_distribution", course_id=course, bins=4) == [
        {"low": 0.0, "high": 0.25, "learners": 1}, {"low": 0.25, "high": 0.5, "learners": 0},
        {"low": 0.5, "high": 0.75, "learners": 0}, {"low": 0.75, "high": 1.0, "learners": 2}]
    assert sum(r["learners"] for r in harness.query("grade_distribution", course_id=course)) == 3


def test_an_unknown_course_has_empty_ranges(harness):
    rows = harness.query("grade_distribution", course_id=_course())
    assert len(rows) == 10 and {r["learners"] for r in rows} == {0}
    assert "No graded attempts" in harness.view("grade_distribution_view", course_id=_course())


@pytest.mark.parametrize("bins", ["0", "101", "many"])
def test_a_bad_bins_names_the_parameter(harness, bins):
    with pytest.raises(BadParameter) as excinfo:
        harness.query("grade_distribution", course_id=_course(), bins=bins)
    assert excinfo.value.param == "bins"


def test_the_view_draws_an_inline_svg_chart_and_its_table(harness):
    course = _course()
    harness.send_events(_three_learners(course))
    page = harness.view("grade_distribution_view", course_id=course, bins=4)
    assert "<svg" in page and "<?xml" not in page
    assert "<td>75% to 100%</td><td>2</td>" in page and "3 learners" in page


def test_answers_do_not_move_when_events_are_delivered_again(harness):
    course = _course()
    start = harness.host.storage.eventlog.head()
    harness.send_events(_three_learners(course))
    before = harness.query("learner_grades", course_id=course)
    assert harness.host.redeliver("problem_response", start, 60)
    assert harness.query("learner_grades", course_id=course) == before
