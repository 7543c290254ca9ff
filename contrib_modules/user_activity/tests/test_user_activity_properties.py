"""The ``edx_pipeline`` event properties: how the pipeline finds an event's course, data and time."""
import json
from pathlib import Path

import pytest

from sandbox.events import Event
from sandbox.properties import build_registry

PROPERTIES = Path(__file__).resolve().parents[1] / "properties.py"


@pytest.fixture(scope="module")
def registry():
    return build_registry({"user_activity": PROPERTIES}, entry_points=False)


def _props(registry, **raw):
    return Event(raw, {"id": "e"}, properties=registry).edx_pipeline


# Course keys as opaque_keys' CourseKey.from_string parses them: the old form allows
# letters, digits and "_.%-" in each part (an empty run too); course-v1 needs org,
# course and run in "_-~.:" and word characters, or a 24-hex-digit version alone.
@pytest.mark.parametrize("course", [
    "edX/DemoX/Demo_Course", "edX/Demo%20X/2014", "org/course/", "course-v1:edX+DemoX+Test_2014",
    "course-v1:edX+DemoX+T~1:a+branch@published", "course-v1:version@519665f6223ebd6980884f2b",
    "course-v1:edX+DemoX+T+branch@draft+version@519665f6223ebd6980884f2b", "ccx-v1:edX+DemoX+T+ccx@3",
    "library-v1:UniX+PhysicsProbs", "  edX/DemoX/Demo_Course  "])
def test_valid_course_keys_are_the_course(registry, course):
    assert _props(registry, context={"course_id": course}).course_id == course.strip()


@pytest.mark.parametrize("course", [
    "course-v1:edX+DemoX", "edX/DemoX", "a/b/c/d", "edX/Demo X/2014", "edX~/DemoX/2014",
    "course-v1:edX+Demo X+T", "course-v1:edX+DemoX+T+version@519665", "ccx-v1:edX+DemoX+T", "DemoX"])
def test_an_invalid_context_course_drops_the_event_even_with_a_course_url(registry, course):
    event = _props(registry, context={"course_id": course}, event_source="server",
                   event_type="/courses/edX/DemoX/Demo_Course/info")
    assert event.course_id is None and event.context_course_id is None


@pytest.mark.parametrize("source, field, url, course", [
    ("server", "event_type", "/courses/course-v1:edX+DemoX+T/courseware/ch1/", "course-v1:edX+DemoX+T"),
    ("server", "event_type", "/courses/edX/DemoX/Demo_Course/info", "edX/DemoX/Demo_Course"),
    ("browser", "page", "https://lms.org/courses/edX/DemoX/Demo_Course/jump?x=1", "edX/DemoX/Demo_Course"),
    # "/courses/v1/..." is an API prefix, not a course: the course comes after it
    ("server", "event_type", "/api/courses/v1/courses/edX/DemoX/T", "edX/DemoX/T"),
    ("browser", "page", "https://lms.org/xblock/block-v1:edX+DemoX+T+type@vertical+block@ab?show_title=0",
     "course-v1:edX+DemoX+T"),
    # a block path that is no block key: no course, though a course path precedes it
    ("server", "event_type", "/courses/edX/DemoX/T/xblock/i4x:;_;_edX/handler/x", None),
    ("browser", "event_type", "/courses/edX/DemoX/T/info", None),      # a browser's URL is its page
    ("mobile", "page", "https://lms.org/courses/edX/DemoX/T/info", None),
    ("server", "event_type", "/dashboard", None)])
def test_without_a_context_course_the_url_gives_it(registry, source, field, url, course):
    props = _props(registry, context={"user_id": 1}, event_source=source, **{field: url})
    assert props.course_id == course
    assert props.context_course_id is None


def test_no_context_no_course(registry):
    assert _props(registry, event_source="server", event_type="/courses/edX/DemoX/T/info").course_id is None


@pytest.mark.parametrize("value, data", [
    ({"id": "v"}, {"id": "v"}),
    (json.dumps({"id": "v", "currentTime": 3}), {"id": "v", "currentTime": 3}),
    ("", {}),
    ("input_p1_2_1=choice_1&input_p1_3_1=x", None),     # the browser problem_check's form data
    ("POST" + "x" * 508, None),                          # a dump truncated at 512 characters
    ("{not json", None), ("[1, 2]", None), ([{"a": 1}], None), (None, None)])
def test_event_data_is_a_dict_decoded_from_json_strings(registry, value, data):
    assert _props(registry, event=value).event_data == data


@pytest.mark.parametrize("time, stamp", [
    ("2014-06-19T18:27:54.714937+00:00", "2014-06-19T18:27:54.714937"),
    ("2014-06-19T18:27:54+00:00", "2014-06-19T18:27:54.000000"),
    ("2014-06-19T18:27:54.5", "2014-06-19T18:27:54.5"), (None, None)])
def test_time_loses_its_offset_and_gains_microseconds(registry, time, stamp):
    assert _props(registry, time=time).time == stamp
