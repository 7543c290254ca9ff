"""user_activity in a real sandbox: the pipeline's labels, on made-up events and on its own test log."""
import uuid
from pathlib import Path

import pytest

from hostd.logfile import LogEvent, read_events
from sandbox.errors import BadParameter
from sandbox.testing import ModuleHarness

pytestmark = pytest.mark.timeout(180)

MODULE = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "edx-analytics-pipeline"
LOG = DATA / "user_activity_tracking.log"
OLD_COURSE = "edX/Open_DemoX/edx_demo_course"
NEW_COURSE = "course-v1:edX+DemoX+Test_2014"


@pytest.fixture(scope="module")
def harness():
    with ModuleHarness(MODULE) as h:
        yield h


def _course() -> str:
    return f"course-v1:Org+C{uuid.uuid4().hex[:8]}+Run"


def _event(course, event_type, source="server", user_id=7, time="2024-03-01T10:00:00.000001+00:00", **extra):
    context = {"course_id": course, "user_id": user_id} if course is not None else {"user_id": user_id}
    return {"id": uuid.uuid4().hex, "event_type": event_type, "event_source": source, "time": time,
            "context": context, "event": {}, **extra}


def _counts(harness, course) -> dict:
    return {(r["user_id"], r["date"], r["activity_type"]): r["number_of_activities"]
            for r in harness.query("user_activity", course_id=course)}


# -- the labels ----------------------------------------------------------------

def test_each_event_gets_every_label_that_applies(harness):
    course = _course()
    harness.send_events([
        _event(course, "problem_check"),                     # ACTIVE + ATTEMPTED_PROBLEM
        _event(course, "problem_check", source="browser"),  # ACTIVE only: the browser's copy
        _event(course, "play_video", source="browser"),     # ACTIVE + PLAYED_VIDEO
        _event(course, "play_video", source="mobile"),      # ACTIVE + PLAYED_VIDEO
        _event(course, "play_video"),                       # ACTIVE only: not from a player
        _event(course, "edx.forum.thread.created"),         # ACTIVE + POSTED_FORUM
        _event(course, "edx.forum.thread.created", source="browser"),  # ACTIVE only
        _event(course, "edx.forum.thread.voted"),           # ACTIVE only
    ])
    assert harness.query("user_activity", course_id=course) == [
        {"user_id": 7, "course_id": course, "date": "2024-03-01", "activity_type": t, "number_of_activities": n}
        for t, n in (("ACTIVE", 8), ("PLAYED_VIDEO", 2), ("ATTEMPTED_PROBLEM", 1), ("POSTED_FORUM", 1))]


def test_tasks_enrollments_and_events_without_user_time_or_course_are_no_activity(harness):
    course = _course()
    no_time = _event(course, "seq_goto")
    del no_time["time"]
    harness.send_events([
        _event(course, "problem_check", source="task"),
        _event(course, "edx.course.enrollment.activated"),
        _event(course, "seq_goto", user_id=None), _event(course, "seq_goto", user_id=""), no_time,
        _event(None, "/dashboard"),                                   # no course anywhere
        _event(course.replace("+Run", ""), "seq_goto"),               # not a course key
        _event(course, "seq_goto", user_id="12"),                     # counted, user 12
    ])
    assert _counts(harness, course) == {(12, "2024-03-01", "ACTIVE"): 1}


def test_the_course_comes_from_the_url_only_without_one_in_the_context(harness):
    course = _course()
    harness.send_events([
        _event(None, f"/courses/{course}/courseware/unit1/"),                          # server: event_type
        _event(None, "page_close", source="browser", page=f"https://lms.org/courses/{course}/info"),
        _event(None, "/xblock/block-v1:" + course.split(":")[1] + "+type@problem+block@p1"),
        _event(None, f"/courses/{course}/x", source="mobile"),                         # mobile: no URL
        _event(_course(), f"/courses/{course}/x"),                                     # the context wins
    ])
    assert _counts(harness, course) == {(7, "2024-03-01", "ACTIVE"): 3}


def test_days_are_the_logged_date_and_users_are_apart(harness):
    course = _course()
    harness.send_events([_event(course, "seq_goto", time="2024-03-01T23:59:59.999999+00:00"),
                         _event(course, "seq_goto", time="2024-03-02T00:00:00+00:00"),
                         _event(course, "seq_goto", time="2024-03-02T00:00:01+00:00", user_id=8)])
    assert _counts(harness, course) == {(7, "2024-03-01", "ACTIVE"): 1, (7, "2024-03-02", "ACTIVE"): 1,
                                        (8, "2024-03-02", "ACTIVE"): 1}


def test_empty_course_is_a_bad_parameter(harness):
    with pytest.raises(BadParameter) as excinfo:
        harness.view("user_activity_view", course_id=" ")
    assert excinfo.value.param == "course_id"


# -- at-least-once delivery -----------------------------------------------------------

def test_events_delivered_again_are_not_counted_again(harness):
    course = _course()
    start = harness.log_head()
    harness.send_events([_event(course, "problem_check"), _event(course, "play_video", source="browser"),
                         _event(course, "seq_goto", user_id=8)])
    once = harness.query("user_activity", course_id=course)
    # ACTIVE: three events, two of user 7; one problem check; one video play.
    assert {(r["user_id"], r["activity_type"]): r["number_of_activities"] for r in once} == {
        (7, "ACTIVE"): 2, (7, "PLAYED_VIDEO"): 1, (7, "ATTEMPTED_PROBLEM"): 1, (8, "ACTIVE"): 1}
    assert harness.redeliver(start) == 3
    assert harness.redeliver(start + 1) == 2   # a tail of the batch, once more
    assert harness.query("user_activity", course_id=course) == once


# -- the pipeline's own test log ----------------------------------------------------

@pytest.fixture(scope="module")
def pipeline_log():
    if not LOG.is_file():
        pytest.skip(f"real test data not found at {LOG}")
    items = list(read_events(LOG))
    assert all(isinstance(item, LogEvent) for item in items)
    with ModuleHarness(MODULE) as h:
        result = h.send_events([item.event for item in items])
        assert result["accepted"] == len(items) == 207
        yield h


def test_the_pipeline_log_new_style_course(pipeline_log):
    # Lines 168-207 are the course-v1 course, all with context.user_id and from
    # browser or server (none is a task or an enrollment):
    # * user 4, lines 168-203, 2014-06-19: 36 events, all ACTIVE; server problem_check
    #   on lines 176, 193, 197 and 201 (the browser's on 174, 191, 195, 199 do not
    #   count); one browser play_video, line 203.
    # * users 10002 and 10003 play a video on 2014-06-19 (lines 204, 205); user 10004
    #   goes to the next sequence (206); user 10003 plays a video on 2014-05-25 (207).
    assert pipeline_log.query("user_activity", course_id=NEW_COURSE) == [
        {"user_id": u, "course_id": NEW_COURSE, "date": d, "activity_type": t, "number_of_activities": n}
        for u, d, t, n in ((10003, "2014-05-25", "ACTIVE", 1), (10003, "2014-05-25", "PLAYED_VIDEO", 1),
                           (4, "2014-06-19", "ACTIVE", 36), (4, "2014-06-19", "PLAYED_VIDEO", 1),
                           (4, "2014-06-19", "ATTEMPTED_PROBLEM", 4),
                           (10002, "2014-06-19", "ACTIVE", 1), (10002, "2014-06-19", "PLAYED_VIDEO", 1),
                           (10003, "2014-06-19", "ACTIVE", 1), (10003, "2014-06-19", "PLAYED_VIDEO", 1),
                           (10004, "2014-06-19", "ACTIVE", 1))]


def test_the_pipeline_log_old_style_course(pipeline_log):
    # Lines 1-167 are the other course or none:
    # * 1-4 enrollments, 5-6 "/" and 8 "/dashboard" (no course), 7 and 71-79
    #   (no user_id), 19, 21, 23, 27, 28 "/instructor_task_status/" (no course in
    #   the context nor in the URL): none counts.
    # * user 4 on 2014-06-19: lines 9-70 less those five (57) and 80-166 less the
    #   lines of users 5, 6, 7 (84, 121, 122, 127): 83; 140 ACTIVE. Server
    #   problem_check: 88, 97, 106, 110. Browser play_video: 120, 124, 126, 128, 130.
    # * user 5: server problem_check (84) and a play (121); user 6: a play (122);
    #   user 7: a seek (127); user 4 plays on 2014-06-12 (167).
    assert _counts(pipeline_log, OLD_COURSE) == {
        (4, "2014-06-12", "ACTIVE"): 1, (4, "2014-06-12", "PLAYED_VIDEO"): 1,
        (4, "2014-06-19", "ACTIVE"): 140, (4, "2014-06-19", "ATTEMPTED_PROBLEM"): 4,
        (4, "2014-06-19", "PLAYED_VIDEO"): 5,
        (5, "2014-06-19", "ACTIVE"): 2, (5, "2014-06-19", "ATTEMPTED_PROBLEM"): 1,
        (5, "2014-06-19", "PLAYED_VIDEO"): 1,
        (6, "2014-06-19", "ACTIVE"): 1, (6, "2014-06-19", "PLAYED_VIDEO"): 1,
        (7, "2014-06-19", "ACTIVE"): 1}


def test_the_pipeline_log_fed_again_gives_the_same_rows(pipeline_log):
    before = pipeline_log.query("user_activity", course_id=OLD_COURSE)
    result = pipeline_log.send_events([item.event for item in read_events(LOG)])
    assert result["duplicates"] == 207
    assert pipeline_log.redeliver(0) == 207
    assert pipeline_log.query("user_activity", course_id=OLD_COURSE) == before


def test_the_view_charts_learners_per_day(pipeline_log):
    page = pipeline_log.view("user_activity_view", course_id=NEW_COURSE)
    assert '<img src="/fs/user_activity/activity-' in page
    # 2014-06-19: four learners active, one attempted a problem, three played a video.
    assert "<tr><td>2014-06-19</td><td>4</td><td>3</td><td>1</td><td>0</td></tr>" in page
    png = next(pipeline_log.fs_root.glob("activity-*.png"))
    assert png.read_bytes().startswith(b"\x89PNG")
