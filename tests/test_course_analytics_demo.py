"""grade_distribution, course_funnel and time_on_task against the ground truth of ``hostd demo``'s synthetic course.

The truth defines a grade over all of a course's problems (best scores) and
counts its funnel stages one by one; these modules see only events, take each
problem's latest attempt and nest the stages. What the truth gives is turned
into the modules' definitions here, from its per-learner records.
"""
from pathlib import Path

import pytest

from sandbox.testing import ModulesHarness

demo = pytest.importorskip("hostd.demo", reason="hostd demo (the synthetic course generator) is not in this tree")

pytestmark = pytest.mark.timeout(600)

CONTRIB = Path(__file__).resolve().parents[1] / "contrib_modules"
MODULES = ("user_activity", "problem_response", "grade_distribution", "course_funnel", "time_on_task")
CHUNK = 1000


@pytest.fixture(scope="module")
def course():
    generated = demo.generate(seed=3, learners=60, weeks=2)
    with ModulesHarness({name: CONTRIB / name for name in MODULES}) as harness:
        for start in range(0, len(generated.events), CHUNK):
            harness.send_events(generated.events[start:start + CHUNK])
        yield harness, generated.truth


def _course_id(truth) -> str:
    return truth["course"]["course_id"]


def _truth_grades(truth) -> dict:
    """:returns: ``{username: (score, max_score)}`` of each learner's latest submissions, from the truth."""
    return {user: (sum(r["score"] for r in records.values()), sum(r["max_score"] for r in records.values()))
            for user, records in truth["attempts"].items()}


def test_learner_grades_are_the_truths_latest_scores_over_the_problems_attempted(course):
    harness, truth = course
    rows = harness.query("learner_grades", course_id=_course_id(truth))
    assert {r["username"]: (r["score"], r["max_score"]) for r in rows} == _truth_grades(truth)
    assert len(rows) == truth["counts"]["attempted"] > 0


def test_the_distribution_holds_every_learner_who_attempted(course):
    harness, truth = course
    rows = harness.query("grade_distribution", course_id=_course_id(truth), bins=5)
    expected = [0] * 5
    for score, max_score in _truth_grades(truth).values():
        expected[min(int(score / max_score * 5), 4)] += 1
    assert [r["learners"] for r in rows] == expected


def test_the_funnel_nests_the_truths_learners(course):
    harness, truth = course
    enrolled = set(truth["learners"])
    watched = enrolled & {user for user, videos in truth["seconds_watched"].items() if videos}
    attempted = watched & set(truth["attempts"])
    passed = {user for user in attempted if _truth_grades(truth)[user][0] >= 0.5 * _truth_grades(truth)[user][1]}
    assert (len(enrolled), len(watched)) == (truth["counts"]["enrolled"], truth["counts"]["watched"])
    assert [r["learners"] for r in harness.query("course_funnel", course_id=_course_id(truth))] == [
        len(enrolled), len(watched), len(attempted), len(passed)]


def test_time_on_task_covers_the_learners_who_had_a_session(course):
    harness, truth = course
    rows = harness.query("time_on_task", course_id=_course_id(truth))
    by_id = {info["user_id"]: user for user, info in truth["learners"].items()}
    active = {user for user, info in truth["learners"].items() if info["sessions"] > 0}
    # Every learner logs events (enrolment at least); those who came back spent time.
    assert {by_id[r["learner"]] for r in rows if r["seconds"] > 0} == active
    for row in rows:  # no gap counts more than the cap
        assert row["seconds"] <= 30 * 60 * (row["events"] - row["sessions"])
