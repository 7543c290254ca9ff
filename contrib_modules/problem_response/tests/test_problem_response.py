"""problem_response in a real sandbox: the pipeline's latest answers, on made-up events and its own test log."""
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
LOG = DATA / "problem_response_tracking.log"
PROBLEM = "block-v1:Org+C+R+type@problem+block@p1"


@pytest.fixture(scope="module")
def harness():
    with ModuleHarness(MODULE, properties=[EDX_PIPELINE]) as h:
        yield h


def _course() -> str:
    return f"course-v1:Org+P{uuid.uuid4().hex[:8]}+Run"


def _check(course, time, answers, submission=None, correct_map=None, username="ann", source="server",
           grade=1, max_grade=2, problem_id=PROBLEM):
    data = {"problem_id": problem_id, "answers": answers, "grade": grade, "max_grade": max_grade,
            "correct_map": correct_map or {}, "state": {"seed": 1}}
    if submission is not None:
        data["submission"] = submission
    return {"event_type": "problem_check", "event_source": source, "username": username,
            "time": f"2024-03-01T{time}+00:00", "context": {"course_id": course, "user_id": 7},
            "event": data}


def _text(answer, correctness="correct", question="Q?"):
    """A submission, a correct-map entry and the raw answer of a text input."""
    return ({"answer": answer, "question": question, "input_type": "textline"},
            {"correctness": correctness}, answer)


def _single(course, time, answer, correctness="correct", **kwargs):
    submission, correct, raw = _text(answer, correctness)
    return _check(course, time, {"p1_2_1": raw}, {"p1_2_1": submission}, {"p1_2_1": correct}, **kwargs)


# -- attempts -------------------------------------------------------------------

def test_the_latest_attempt_in_time_gives_the_row_whatever_the_arrival_order(harness):
    course = _course()
    harness.send_events([_single(course, "10:00:05.500000", "second", "incorrect", grade=0)])
    harness.send_events([_single(course, "10:00:01", "first"), _single(course, "10:00:03.250000", "middle")])
    assert harness.query("problem_responses", course_id=course) == [{
        "username": "ann", "problem_id": PROBLEM, "answer_id": "p1_2_1", "question": "Q?", "score": 0.0,
        "max_score": 2.0, "correct": False, "answer": ["second"], "total_attempts": 3,
        "first_attempt_date": "2024-03-01T10:00:01+00:00", "last_attempt_date": "2024-03-01T10:00:05.500000+00:00"}]


def test_only_valid_server_checks_are_attempts(harness):
    course = _course()
    no_time = _single(course, "10:00:00", "x")
    del no_time["time"]
    no_context = _single(course, "10:00:00", "x")
    del no_context["context"]
    harness.send_events([
        _single(course, "10:00:00", "x", source="browser"),                 # the browser's copy
        _single(course, "10:00:00", "x", username="  "), no_time, no_context,
        _single(course, "10:00:00", "x", problem_id=None),
        _check(course, "10:00:00", {}),                                     # no answers
        _single(course.replace("+Run", ""), "10:00:00", "x"),               # not a course key
        _check(course, "10:00:00", {"p1\n": "x"}, {}),                      # an id the pipeline refuses
        _single(course, "10:00:09", "kept", username="bob")])
    rows = harness.query("problem_responses", course_id=course)
    assert [(r["username"], r["answer"], r["total_attempts"]) for r in rows] == [("bob", ["kept"], 1)]


def test_each_visible_part_is_a_row_hints_are_cleaned_and_unknown_is_none(harness):
    course = _course()
    choice = {"answer": ["apple\n   <choicehint selected=\"true\">Yes.</choicehint>\n  ", "pear"],
              "question": "Which\n  fruits?"}
    harness.send_events([_check(
        course, "10:00:00",
        answers={"p1_2_1": ["choice_0", "choice_1"], "p1_3_1": "free", "p1_3_1_dynamath": "<math/>",
                 "p1_4_1_comment": "c"},
        submission={"p1_2_1": choice, "p1_3_1": {"answer": "free", "question": ""}},
        correct_map={"p1_2_1": {"correctness": "correct"}, "p1_3_1": {"correctness": "unknown"}})])
    rows = harness.query("problem_responses", course_id=course)
    assert [(r["answer_id"], r["question"], r["correct"], r["answer"]) for r in rows] == [
        ("p1_2_1", "Which fruits?", True, ["apple  ", "pear"]),   # "apple " + " " around the hint
        ("p1_3_1", "", None, ["free"])]


def test_an_old_event_without_submissions_gives_raw_answers_of_mapped_parts(harness):
    course = _course()
    harness.send_events([_check(course, "10:00:00", answers={"p1_2_1": "choice_2", "p1_3_1": "lost"},
                                correct_map={"p1_2_1": {"correctness": "incorrect"}})])
    rows = harness.query("problem_responses", course_id=course)
    assert [(r["answer_id"], r["question"], r["correct"], r["answer"]) for r in rows] == [
        ("p1_2_1", "", False, ["choice_2"])]


def test_the_view_charts_latest_answers_per_problem(harness):
    course = _course()
    harness.send_events([_single(course, "10:00:00", "a"), _single(course, "10:00:00", "b", "incorrect",
                                                                   username="bob")])
    page = harness.view("problem_responses_view", course_id=course)
    assert f"<tr><td>{PROBLEM}</td><td>1</td><td>1</td><td>0</td></tr>" in page
    png = harness.fs_root / page.split('<img src="/fs/problem_response/')[1].split("?")[0]
    assert png.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(BadParameter):
        harness.view("problem_responses_view", course_id="")


# -- at-least-once delivery ------------------------------------------------------

def test_attempts_delivered_again_are_not_counted_again(harness):
    course = _course()
    start = harness.log_head()
    harness.send_events([_single(course, "10:00:00", "one"), _single(course, "10:00:01", "two"),
                         _single(course, "10:00:02", "three", username="bob")])
    once = harness.query("problem_responses", course_id=course)
    assert [(r["username"], r["total_attempts"], r["answer"]) for r in once] == [
        ("ann", 2, ["two"]), ("bob", 1, ["three"])]
    assert harness.redeliver(start) == 3
    assert harness.redeliver(start + 1) == 2
    assert harness.query("problem_responses", course_id=course) == once


# -- the pipeline's own test log ------------------------------------------------------

DEMO1, DEMO2 = "course-v1:OpenCraft+PRDemo1+2016", "course-v1:OpenCraft+PRDemo2+2016"
CHINA = "What was the first post-secondary school in China to allow both male and female students?"


@pytest.fixture(scope="module")
def pipeline_log():
    if not LOG.is_file():
        pytest.skip(f"real test data not found at {LOG}")
    items = list(read_events(LOG))
    assert all(isinstance(item, LogEvent) for item in items)
    with ModuleHarness(MODULE, properties=[EDX_PIPELINE]) as h:
        assert h.send_events([item.event for item in items])["accepted"] == len(items) == 846
        yield h


def _block(course, block):
    return f"block-v1:{course.split(':')[1]}+type@problem+block@{block}"


def _expected(course, rows):
    return [{"username": user, "problem_id": _block(course, block), "answer_id": f"{block}_2_1", "question": question,
             "score": score, "max_score": 1.0, "correct": correct, "answer": answer, "total_attempts": attempts,
             "first_attempt_date": f"2016-09-{first}+00:00", "last_attempt_date": f"2016-09-{last}+00:00"}
            for user, block, question, score, correct, answer, attempts, first, last in rows]


def test_the_pipeline_log_second_course(pipeline_log):
    # The log's 25 server problem_check events (each also has a browser copy, not an
    # attempt); four are in PRDemo2, one problem each, but velma's text input twice
    # (lines 763 and 767). Latest answers: "potato" whose choice hint goes (the space
    # before it stays), "Good school?" (incorrect, grade 0), a reflection whose
    # correctness is "unknown" (None) with grade 1, and scooby's one checked box,
    # "tomato" + its two hints, each run of whitespace around them one space.
    assert pipeline_log.query("problem_responses", course_id=DEMO2) == _expected(DEMO2, [
        ("scooby", "a9cf3850b4b5467a9c9e7ec91b9b9c70", "", 0.0, False, ["tomato   "], 1,
         "07T05:08:46.266228", "07T05:08:46.266228"),
        ("velma", "8ea3115a1a2f463397de20b231b8caeb", CHINA, 0.0, False, ["Good school?"], 2,
         "07T05:07:05.296673", "07T05:07:10.760224"),
        ("velma", "9ddba291e7d549bc96128f3accd34e80", "", 1.0, True, ["potato "], 1,
         "07T05:06:45.286231", "07T05:06:45.286231"),
        ("velma", "a0e5785dcf05453b868b0e0692a2dd6b", "", 1.0, None, ["OHMMMMMMMMMMM"], 1,
         "07T05:07:42.552989", "07T05:07:42.552989")])


def test_the_pipeline_log_first_course(pipeline_log):
    # PRDemo1, by learner and problem (lines of the server problem_check events):
    # scooby d2069: 195 (09-06), 529, 533 (09-07) and 845 (09-08): 4 attempts, the last
    #   "Germany", incorrect; 9ddba: 538, 546 "apple" + hint, incorrect; a9cf: 563, two
    #   boxes; 8ea31: 573, 577; a0e57: 591, unknown correctness but grade 1.
    # velma: d2069 618; 9ddba 623, 628; 7cb70 638, 642; a9cf 651, three boxes; 8ea31
    #   659, 673; 8313a 685 (its question is given); a0e57 696.
    assert pipeline_log.query("problem_responses", course_id=DEMO1) == _expected(DEMO1, [
        ("scooby", "8ea3115a1a2f463397de20b231b8caeb", CHINA, 0.0, False, ["School of the People's Revolution"], 2,
         "07T04:58:32.634058", "07T04:58:39.298530"),
        ("scooby", "9ddba291e7d549bc96128f3accd34e80", "", 0.0, False, ["apple "], 2,
         "07T04:57:21.465996", "07T04:57:28.836253"),
        ("scooby", "a0e5785dcf05453b868b0e0692a2dd6b", "", 1.0, None, ["Not really.."], 1,
         "07T04:59:07.675186", "07T04:59:07.675186"),
        ("scooby", "a9cf3850b4b5467a9c9e7ec91b9b9c70", "", 0.0, False, ["potato   ", "tomato   "], 1,
         "07T04:58:04.130649", "07T04:58:04.130649"),
        ("scooby", "d2069c02adc347318bc6e022705f2346", "", 0.0, False, ["Germany"], 4,
         "06T04:57:09.509001", "08T04:57:09.509001"),
        ("velma", "7cb701dffe9841c3adea9f40134744f9", "", 1.0, True, ["Indonesia"], 2,
         "07T05:00:28.047698", "07T05:00:33.559362"),
        ("velma", "8313adf80369439292ccb5935a69e535", "Which U.S. state has the largest land area?", 1.0, True,
         ["Alaska"], 1, "07T05:02:00.744591", "07T05:02:00.744591"),
        ("velma", "8ea3115a1a2f463397de20b231b8caeb", CHINA, 1.0, True, ["National Central University"], 2,
         "07T05:01:04.303060", "07T05:01:46.086874"),
        ("velma", "9ddba291e7d549bc96128f3accd34e80", "", 1.0, True, ["potato "], 2,
         "07T05:00:17.033683", "07T05:00:19.520510"),
        ("velma", "a0e5785dcf05453b868b0e0692a2dd6b", "", 1.0, None, ["Ommmmmmmmmm"], 1,
         "07T05:02:17.665977", "07T05:02:17.665977"),
        ("velma", "a9cf3850b4b5467a9c9e7ec91b9b9c70", "", 1.0, True, ["apple   ", "pumpkin   ", "tomato   "], 1,
         "07T05:00:46.023735", "07T05:00:46.023735"),
        ("velma", "d2069c02adc347318bc6e022705f2346", "", 1.0, True, ["Indonesia"], 1,
         "07T05:00:10.938503", "07T05:00:10.938503")])


def test_the_pipeline_log_fed_again_gives_the_same_rows(pipeline_log):
    before = [pipeline_log.query("problem_responses", course_id=c) for c in (DEMO1, DEMO2)]
    assert pipeline_log.send_events([item.event for item in read_events(LOG)])["duplicates"] == 846
    assert pipeline_log.redeliver(0) == 846
    assert [pipeline_log.query("problem_responses", course_id=c) for c in (DEMO1, DEMO2)] == before
