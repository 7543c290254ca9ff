"""The pipeline's video arithmetic, free of storage: events to viewings, viewings to segments.

It follows the video tasks of the Open edX analytics pipeline
(edx-analytics-pipeline): ``UserVideoViewingTask`` (``mapper`` and
``reducer``) and ``VideoUsageTask.reducer``.
"""
from __future__ import annotations

import math
from collections import defaultdict

__all__ = ["VIDEO_EVENT_TYPES", "SEGMENT_SECONDS", "MINIMUM_VIEWING_SECONDS", "UNKNOWN_DURATION",
           "DROPOFF_THRESHOLD", "video_event", "viewings", "usage"]

PLAYED, PAUSED, SEEK, STOPPED = "play_video", "pause_video", "seek_video", "stop_video"
VIDEO_EVENT_TYPES = (PLAYED, PAUSED, SEEK, STOPPED)
MAXIMUM_OFFSET = 3600 * 10.0  # an offset past ten hours is a broken event
UNKNOWN_DURATION = -1
SEGMENT_SECONDS = 5
MINIMUM_VIEWING_SECONDS = 0.25
DROPOFF_THRESHOLD = 0.05  # the pipeline's configured ``[videos] dropoff_threshold``


def _offset(value) -> float | None:
    """``_check_time_offset``: a finite number of seconds in [0, 10 h], else None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(value) or math.isinf(value) or value > MAXIMUM_OFFSET or value < 0.0:
        return None
    return value


def _duration(data: dict) -> float:
    """The event's ``duration``, or -1 (unknown) when it is absent, null, zero or not a number."""
    value = data.get("duration", UNKNOWN_DURATION)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value:
        return UNKNOWN_DURATION
    return float(value)


def video_event(event_type, timestamp, user_id, course_id, data) -> dict | None:
    """The pipeline's ``UserVideoViewingTask.mapper``: one event as what the reducer needs.

    :param event_type: the event's ``event_type``.
    :param timestamp: its time as the pipeline sorts it (``evt.edx_pipeline.time``).
    :param user_id: ``context.user_id``.
    :param course_id: its course (``evt.edx_pipeline.course_id``).
    :param data: its event data (``evt.edx_pipeline.event_data``).
    :returns: ``{"user_id", "course_id", "module", "time", "type", "current", "old", "duration"}``,
        or None when the pipeline drops the event.
    """
    if event_type not in VIDEO_EVENT_TYPES or not timestamp or not user_id or not course_id or data is None:
        return None
    try:
        user_id = int(user_id)
    except (TypeError, ValueError):
        return None
    module = data.get("id", "")
    module = module.strip() if isinstance(module, str) else ""  # ids with a leading newline are seen
    if not module:
        return None
    current = old = None
    if event_type == SEEK:
        current, old = _offset(data.get("new_time")), _offset(data.get("old_time"))
        if old is None:
            return None
    else:
        # a pause at the very start may carry no currentTime: it is 0
        current = _offset(data.get("currentTime", 0) if event_type == PAUSED else data.get("currentTime"))
    if current is None:
        return None
    return {"user_id": user_id, "course_id": course_id, "module": module, "time": timestamp,
            "type": event_type, "current": current, "old": old, "duration": _duration(data)}


def _order(event: dict) -> tuple:
    """The order of the pipeline's ``sorted(events)`` on its Python 2 tuples, where None
    sorts before any number: time, then event type, then offsets."""
    def number(value):
        return (0, 0.0) if value is None else (1, value)
    return event["time"], event["type"], number(event["current"]), number(event["old"]), event["duration"]


def viewings(events) -> list[tuple[float, float, float]]:
    """The pipeline's ``UserVideoViewingTask.reducer`` for one learner and one video.

    A ``play_video`` starts a viewing (at the new position of a seek that just
    ended the previous viewing, whatever the play says, else at its own
    ``currentTime``); a later pause or stop ends it at its ``currentTime``, a
    seek at its ``old_time``. A viewing ending past the video's end (+1 s),
    before its start, or lasting under 0.25 s is dropped; a play after a play
    restarts the viewing; a viewing never ended is dropped.

    :param events: that learner's :func:`video_event` dicts for that video, in any order.
    :returns: ``[(start, end, duration)]`` in time order (duration -1: unknown).
    """
    found, viewing, last_end = [], None, None
    for event in sorted(events, key=_order):
        if event["type"] == PLAYED:
            start = last_end["current"] if last_end is not None and last_end["type"] == SEEK else event["current"]
            viewing, last_end = (start, event["duration"]), None
        elif viewing is not None:
            end = event["old"] if event["type"] == SEEK else event["current"]
            start, duration = viewing
            if ((duration == UNKNOWN_DURATION or end <= duration + 1) and end >= start
                    and end - start >= MINIMUM_VIEWING_SECONDS):
                found.append((start, end, duration))
            # an ended viewing is forgotten even when it was dropped: the data is untrustworthy
            viewing, last_end = None, event
    return found


def _segment(second: float) -> int:
    return int(second) // SEGMENT_SECONDS


def _final_segment(users: dict) -> int:
    """``get_final_segment``: the last segment before a sharp drop in learners (the end of an
    unknown-length video; some events come after it)."""
    segments = sorted(users, reverse=True)
    final = segments[0]
    last_count = len(users[final])
    for segment in segments[1:]:
        count = len(users[segment])
        if last_count <= count * DROPOFF_THRESHOLD:
            return segment
        last_count = count
    return final


def usage(viewings_by_user) -> dict:
    """The pipeline's ``VideoUsageTask.reducer`` and the ``video`` table's sum, for one video.

    :param viewings_by_user: ``[(user_id, [(start, end, duration)])]``; a user may come twice.
    :returns: ``{"duration", "segment_length", "users_at_start", "users_at_end",
        "total_viewed_seconds", "segments": [{"segment", "num_users", "num_views"}]}``;
        None when there is no viewing at all.
    """
    users, views = defaultdict(set), defaultdict(int)
    duration = 0.0
    for user_id, found in viewings_by_user:
        for start, end, viewing_duration in found:
            # the longest known duration, unless any viewing's is unknown
            if duration == UNKNOWN_DURATION or viewing_duration == UNKNOWN_DURATION:
                duration = UNKNOWN_DURATION
            else:
                duration = max(duration, viewing_duration)
            for segment in range(_segment(start), _segment(end) + 1):
                users[segment].add(user_id)
                views[segment] += 1
    if not users:
        return None
    if duration == UNKNOWN_DURATION:
        final = _final_segment(users)
        duration = (final + 1) * SEGMENT_SECONDS - 1
    else:
        final = _segment(duration)
    # "watched to the end": the segment at the later of 30 s and 5 % before the end (credits...)
    end_segment = _segment(max(duration - 30, duration * 0.95))
    segments = []
    for segment in sorted(users):
        segments.append({"segment": segment, "num_users": len(users[segment]), "num_views": views[segment]})
        if segment == final:
            break
    return {"duration": int(duration), "segment_length": SEGMENT_SECONDS,
            "users_at_start": len(users.get(0, ())), "users_at_end": len(users.get(end_segment, ())),
            "total_viewed_seconds": sum(s["num_views"] for s in segments) * SEGMENT_SECONDS,
            "segments": segments}
