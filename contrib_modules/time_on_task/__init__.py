"""Time on task: how long each learner spent in a course, from the gaps between their events.

An event's time on task is the time until the same learner's next event of the
same session in the same course, at most ``cap_minutes`` (default 30: a longer
gap is a learner who left, not one who kept working). The last event of a
session has no next one and counts 0; so does a session of one event.
A learner's time is the sum over their events.

An event property cannot see the next event, so the work is split: this
module's ``properties.py`` gives what one event tells (``time_on_task.session``,
``time_on_task.timestamp``), the handler stores each event's learner, session
and time, and the query sorts each session's times and adds the capped gaps.
Learners are ``context.user_id`` and courses ``evt.edx_pipeline.course_id``,
as ``user_activity`` (which must be installed) reads them. Events without a
session (most server events) are left out: their session is unknown, and the
browser events of the same moments already count.

Storage is one document per event, ``_id`` its identity in the log, written
with an upsert of the same fields: a repeat changes nothing, so the answers
are exact under at-least-once delivery.

- ``/query/time_on_task?course_id=&cap_minutes=30``: ``[{"learner", "seconds", "events", "sessions"}]``.
- ``/view/time_on_task_view?course_id=``: minutes per learner, a PNG in the module's file store.
"""
import html
import io
import math
import zlib
from collections import defaultdict

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pymongo import UpdateOne

from sandbox import BadParameter, event_handler, query, view

EVENTS = "session_events"
MAX_CAP_MINUTES = 24 * 60


@event_handler()
def record_times(db, events):
    """Store the learner, course, session and time of each event that has them: one bulk upsert, idempotent."""
    writes = []
    for evt in events:
        fields = {"course_id": evt.edx_pipeline.course_id, "learner": evt.edx_pipeline.user_id,
                  "session": evt.time_on_task.session, "t": evt.time_on_task.timestamp}
        if all(value is not None and value != "" for value in fields.values()):
            # Prefixed: an event's id may start with a date, which the embedded store mis-compares.
            writes.append(UpdateOne({"_id": f"event|{evt.meta['id']}"}, {"$set": fields}, upsert=True))
    if writes:
        db[EVENTS].create_index("course_id", name="course_id")  # a no-op once it exists
        db[EVENTS].bulk_write(writes, ordered=False)


def capped_gaps(times, cap_s: float) -> float:
    """:param times: one session's event times (seconds), in any order.

    :returns: the sum of the gaps between consecutive times, each at most ``cap_s``.
    """
    ordered = sorted(times)
    return sum(min(later - earlier, cap_s) for earlier, later in zip(ordered, ordered[1:]))


def _learner_order(learner) -> tuple:
    return (0, learner, "") if isinstance(learner, (int, float)) else (1, 0, str(learner))


@query()
def time_on_task(db, course_id: str, cap_minutes: float = 30.0):
    """Each learner's time on task in a course.

    :param course_id: the course, as its events name it.
    :param cap_minutes: the longest gap counted, in minutes (above 0, at most a day).
    :returns: ``[{"learner", "seconds", "events", "sessions"}]`` ordered by learner.
    :raises BadParameter: ``cap_minutes`` is out of range.
    """
    if not (0 < cap_minutes <= MAX_CAP_MINUTES and math.isfinite(cap_minutes)):
        raise BadParameter("cap_minutes", f"must be above 0 and at most {MAX_CAP_MINUTES}, got {cap_minutes}")
    sessions = defaultdict(lambda: defaultdict(list))
    for doc in db[EVENTS].find({"course_id": course_id}, {"learner": 1, "session": 1, "t": 1}):
        sessions[doc["learner"]][doc["session"]].append(doc["t"])
    cap_s = cap_minutes * 60
    rows = [{"learner": learner, "seconds": round(sum(capped_gaps(times, cap_s) for times in by.values()), 6),
             "events": sum(len(times) for times in by.values()), "sessions": len(by)}
            for learner, by in sessions.items()]
    return sorted(rows, key=lambda row: _learner_order(row["learner"]))


def _chart_png(rows, course_id: str) -> bytes:
    """Horizontal bars of minutes per learner (pyplot-free, no global state)."""
    figure = Figure(figsize=(6, 1.5 + 0.3 * len(rows)), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.barh([str(r["learner"]) for r in rows], [r["seconds"] / 60 for r in rows], color="#4477aa")
    axes.invert_yaxis()
    axes.set_xlabel("minutes on task")
    axes.set_ylabel("learner")
    axes.set_title(f"Time on task: {course_id}")
    figure.tight_layout()
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    return buffer.getvalue()


@view()
def time_on_task_view(fs, query, course_id: str, cap_minutes: float = 30.0):
    """Minutes on task per learner of a course, as a chart and a table.

    :param course_id: the course.
    :param cap_minutes: the longest gap counted, in minutes.
    :returns: an HTML page showing the chart (a PNG in the module's file store) through a signed URL.
    :raises BadParameter: the course is empty.
    """
    if not course_id.strip():
        raise BadParameter("course_id", "must not be empty")
    rows = query.time_on_task(course_id=course_id, cap_minutes=cap_minutes)
    name = html.escape(course_id)
    if not rows:
        return f"<html><body><h1>Time on task in {name}</h1><p>No sessions yet.</p></body></html>"
    filename = f"time-on-task-{zlib.crc32(course_id.encode('utf-8')):08x}.png"
    with fs.open(filename, "wb") as handle:
        handle.write(_chart_png(rows, course_id))
    fs.expire(filename, 3600)  # redrawn by every view; no need to keep old ones
    table = "".join(f"<tr><td>{html.escape(str(r['learner']))}</td><td>{r['seconds'] / 60:.1f}</td>"
                    f"<td>{r['events']}</td><td>{r['sessions']}</td></tr>" for r in rows)
    return (f"<html><body><h1>Time on task in {name}</h1>"
            f'<img src="{html.escape(fs.get_url(filename, expires=3600))}" alt="Minutes on task per learner in {name}">'
            f"<table><tr><th>learner</th><th>minutes</th><th>events</th><th>sessions</th></tr>{table}</table>"
            f"<p>Gaps longer than {cap_minutes:g} minutes count as {cap_minutes:g}.</p></body></html>")
