"""edx_pipeline: how the Open edX analytics pipeline reads a tracking-log event (``evt.edx_pipeline.*``).

The Open edX analytics pipeline (edx-analytics-pipeline) decides which course
an event belongs to, what its data is and when it happened in a few small
functions of its ``eventlog`` and ``opaque_key_util`` helpers that every one of
its tasks shares. They are written once here, as event properties, so that the
``user_activity``, ``video`` and ``problem_response`` modules read events the
same way (those two need this module installed, as it is in
``contrib_modules``):

``course_id``
    ``get_course_id(event, from_url=True)``: ``context.course_id`` (stripped)
    when present, which must then be a valid course key, else none at all;
    without one, the course in the URL of a ``server`` event's
    ``event_type`` or a ``browser`` event's ``page``
    (``.../courses/<course key>/...`` or ``.../xblock/<block key>...``).
``context_course_id``
    the same with ``from_url=False``: only ``context.course_id``.
``event_data``
    ``get_event_data(event)``: the ``event`` field as a dict. Browser events
    carry it as a JSON-encoded string, decoded here; ``""`` is ``{}``; a
    ``key=value`` string, a list, a truncated 512-character ``POST`` dump or
    undecodable JSON give None (no value).
``user_id``
    ``context.user_id``, the learner as the pipeline's tasks identify them: a
    number (a string of digits is read as one); None when missing, empty or
    not a scalar (the pipeline then drops the event).
``time``
    ``get_event_time_string(event)``: ``time`` without its ``+HH:MM`` offset
    and with microseconds (``2014-06-19T18:27:54.714937``): the string the
    pipeline sorts events by. None without a ``time``.

Course keys are checked as ``opaque_keys``' ``CourseKey.from_string`` checks
them: ``org/course/run`` (letters, digits, ``_.%-``; the run may be empty),
``course-v1:org+course+run`` (letters, digits, ``_-~.:``) with an optional
``+branch@...`` and ``+version@<24 hex digits>`` (or that version alone),
``ccx-v1:...+ccx@N`` and ``library-v1:org+library``. The course of a block in
a URL is that of its ``block-v1:`` (or ``ccx-block-v1:``) key.

This file is imported by hostd and by every sandbox: standard library only,
no work at import.
"""
from __future__ import annotations

import json
import re

from sandbox.properties import event_property

__all__ = ["course_key", "course_id", "context_course_id", "event_data", "event_time", "user_id"]

_ID = r"[\w\-~.:]+"
_VERSIONS = rf"(?:\+branch@{_ID})?(?:\+version@[a-f0-9]{{24}})?"
# course-v1 and ccx-v1 keys need org, course and run, or a version alone; a library
# (library-v1) is a course key too; the old form is org/course/run, its run possibly empty.
_COURSE_KEY = re.compile(rf"(?:course-v1:(?:{_ID}\+{_ID}\+{_ID}{_VERSIONS}|version@[a-f0-9]{{24}})"
                         rf"|ccx-v1:{_ID}\+{_ID}\+{_ID}{_VERSIONS}\+ccx@\d+"
                         rf"|library-v1:{_ID}\+{_ID}{_VERSIONS}"
                         r"|[\w.%-]+/[\w.%-]+/[\w.%-]*)")
_BLOCK_KEY = re.compile(rf"(?P<ns>block-v1|ccx-block-v1):(?P<course>{_ID}\+{_ID}\+{_ID}{_VERSIONS}"
                        rf"(?:\+ccx@\d+)?)\+type@{_ID}\+block@[\w\-~.:%]+")
# The pipeline's own URL patterns, taken from the LMS.
_COURSE_URL = re.compile(r"^(.*?/courses/)(?!v[0-9]+/[^/]+)(?P<course_id>[^/+]+(/|\+)[^/+]+(/|\+)[^/?]+)")
_BLOCK_URL = re.compile(r"^(.*?/xblock/)(?P<block_id>[^/+]+(/|\+)[^/+]+(/|\+)[^/?#]+)")


def course_key(text) -> str | None:
    """:returns: ``text`` if it is a course key ``CourseKey.from_string`` accepts, else None."""
    return text if isinstance(text, str) and _COURSE_KEY.fullmatch(text) else None


def _course_of_block(block_id: str) -> str | None:
    match = _BLOCK_KEY.fullmatch(block_id)
    if match is None:
        return None
    namespace = "ccx-v1" if match["ns"] == "ccx-block-v1" else "course-v1"
    return course_key(f"{namespace}:{match['course']}")


def _course_from_url(url) -> str | None:
    """``opaque_key_util.get_course_key_from_url``: a block URL first, then a course URL."""
    url = url if isinstance(url, str) else ""
    match = _BLOCK_URL.match(url)
    if match:
        return _course_of_block(match["block_id"])
    match = _COURSE_URL.match(url)
    return course_key(match["course_id"]) if match else None


def _course_id(event, from_url: bool) -> str | None:
    context = event.get("context")
    if not isinstance(context, dict):
        return None  # the pipeline: "Assume it's old, and not worth logging"
    explicit = context.get("course_id") or ""
    explicit = explicit.strip() if isinstance(explicit, str) else ""
    if explicit:
        # a bogus explicit course is not looked for in the URL: the event is dropped
        return course_key(explicit)
    if not from_url:
        return None
    source = event.get("event_source")
    url = event.get("event_type") if source == "server" else event.get("page") if source == "browser" else ""
    return _course_from_url(url)


@event_property("course_id", namespace="edx_pipeline")
def course_id(event) -> str | None:
    """:returns: the event's course, from its context or else its URL (``from_url=True``)."""
    return _course_id(event, from_url=True)


@event_property("context_course_id", namespace="edx_pipeline")
def context_course_id(event) -> str | None:
    """:returns: the event's course from its context only (``from_url=False``)."""
    return _course_id(event, from_url=False)


@event_property("event_data", namespace="edx_pipeline")
def event_data(event) -> dict | None:
    """:returns: the ``event`` field as a dict, decoded from JSON when it is a string; else None."""
    value = event.get("event")
    if value == "":
        return {}
    if isinstance(value, str):
        if len(value) == 512 and "POST" in value:
            return None  # an implicit event whose dump the tracking middleware truncated
        if "{" not in value and "=" in value:
            return None  # key=value pairs (the browser problem_check): the pipeline skips them
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


@event_property("time", namespace="edx_pipeline")
def event_time(event) -> str | None:
    """:returns: ``time`` without its UTC offset, with microseconds; None without a ``time``."""
    raw = event.get("time")
    if not isinstance(raw, str):
        return None
    stamp = raw.split("+")[0]
    return stamp if "." in stamp else f"{stamp}.000000"


@event_property("user_id", namespace="edx_pipeline")
def user_id(event):
    """:returns: ``context.user_id`` (a number as a number), or None when the pipeline drops the event."""
    context = event.get("context")
    value = context.get("user_id") if isinstance(context, dict) else None
    if not value or isinstance(value, (dict, list)):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value
