"""User activity: how many events of each kind each learner had in a course, each day.

This is the Open edX analytics pipeline's user activity task
(edx-analytics-pipeline's ``UserActivityTask``), which feeds Insights'
engagement charts. An event counts when it has a
``time``, a ``context.user_id`` and a course (``evt.edx_pipeline.course_id``,
see ``properties.py``: the context's course, else the course in its URL), and
it gets every label that applies:

``ACTIVE``
    any such event, except background tasks (``event_source == "task"``) and
    enrollment events (``edx.course.enrollment.*``);
``ATTEMPTED_PROBLEM``
    a ``problem_check`` from the server (not the browser's, which every
    check also sends);
``POSTED_FORUM``
    a server ``edx.forum.*.created`` event;
``PLAYED_VIDEO``
    a ``play_video`` from the browser or the mobile app.

The day is the date part of ``time`` as logged (no time-zone conversion; the
LMS logs UTC). ``/query/user_activity?course_id=`` gives
``[{"user_id", "course_id", "date", "activity_type", "number_of_activities"}]``
and ``/view/user_activity_view?course_id=`` charts the learners active per day.

Delivery is at least once, so counting is idempotent: an event marks its rows
with a field named after its place in the log (``$set`` of ``s<seq>``, the
same field however often it comes), and a row's number is how many such marks
it holds. A row is split into documents of 100,000 log positions so none grows
without bound. (The embedded store adds fields cheaply; ``$addToSet`` into a
long array costs it time in proportion to the array.)

Deviations from the pipeline: it runs over a date interval, this module over
every event it is given; the pipeline's ``user_id`` is the string it writes
to a Hive ``INT`` column, here it stays the number the log holds; an event
logged twice as two identical lines is one event here (the log keeps it once).
"""
import html
import json
import zlib
from collections import defaultdict

from pymongo import UpdateOne

from sandbox import BadParameter, event_handler, query, view
from sandbox.charts import count_chart, png

ACTIVE = "ACTIVE"
PLAYED_VIDEO = "PLAYED_VIDEO"
ATTEMPTED_PROBLEM = "ATTEMPTED_PROBLEM"
POSTED_FORUM = "POSTED_FORUM"
ACTIVITY_TYPES = (ACTIVE, PLAYED_VIDEO, ATTEMPTED_PROBLEM, POSTED_FORUM)
ROWS = "activity_rows"
SPAN = 100_000  # log positions per row document
_FIELDS = ("user_id", "course_id", "date", "activity_type")


def activity_types(event) -> list[str]:
    """The pipeline's ``get_predicate_labels``: the labels of one event.

    :param event: the raw event (a mapping).
    :returns: the labels that apply, ``ACTIVE`` first; empty when it is no activity.
    """
    event_type = event.get("event_type")
    source = event.get("event_source")
    if not isinstance(event_type, str) or source == "task" or event_type.startswith("edx.course.enrollment."):
        return []
    labels = [ACTIVE]
    if source == "server":
        if event_type == "problem_check":
            labels.append(ATTEMPTED_PROBLEM)
        if event_type.startswith("edx.forum.") and event_type.endswith(".created"):
            labels.append(POSTED_FORUM)
    if source in ("browser", "mobile") and event_type == "play_video":
        labels.append(PLAYED_VIDEO)
    return labels


def _user_order(user_id) -> tuple:
    """:returns: a sort key putting numeric user ids in numeric order, before any other."""
    return (0, user_id, "") if isinstance(user_id, int) else (1, 0, str(user_id))


def _doc_id(row: tuple, span: int) -> str:
    # JSON: unambiguous whatever the parts hold, and never starting with a date
    # (the embedded store mis-compares _ids that do).
    return json.dumps([*row, span], separators=(",", ":"))


def _marks(doc) -> int:
    """:returns: how many events marked a row document (its ``s<seq>`` fields)."""
    return sum(1 for key in doc if key[0] == "s" and key[1:].isdigit())


@event_handler()
def count_activity(db, events):
    """Mark the rows of each event's labels with its log position: one bulk write per batch, idempotent."""
    marks = defaultdict(dict)
    for evt in events:
        raw = evt.event
        user_id = evt.edx_pipeline.user_id
        stamp = raw.get("time")
        if user_id is None or not isinstance(stamp, str) or not stamp:
            continue
        course = evt.edx_pipeline.course_id
        if not course:
            continue
        date = stamp.split("T")[0]
        seq = evt.meta["seq"]
        for label in activity_types(raw):
            marks[((user_id, course, date, label), seq // SPAN)][f"s{seq}"] = 1
    if marks:
        db[ROWS].create_index("course_id", name="course_id")  # a no-op once it exists
        db[ROWS].bulk_write([
            UpdateOne({"_id": _doc_id(row, span)},
                      {"$set": fields, "$setOnInsert": dict(zip(_FIELDS, row))}, upsert=True)
            for (row, span), fields in marks.items()], ordered=False)


@query()
def user_activity(db, course_id: str):
    """Events per learner, day and activity type in a course.

    :param course_id: the course, as the events name it.
    :returns: ``[{"user_id", "course_id", "date", "activity_type", "number_of_activities"}]``
        ordered by date, user and activity type.
    """
    counts = defaultdict(int)
    for doc in db[ROWS].find({"course_id": course_id}):
        counts[tuple(doc[key] for key in _FIELDS)] += _marks(doc)
    rows = [{**dict(zip(_FIELDS, row)), "number_of_activities": n} for row, n in counts.items()]
    return sorted(rows, key=lambda r: (r["date"], _user_order(r["user_id"]), ACTIVITY_TYPES.index(r["activity_type"])))


def _learners_per_day(rows) -> dict:
    """:returns: ``{activity_type: {date: number of learners}}``."""
    learners = defaultdict(lambda: defaultdict(set))
    for row in rows:
        learners[row["activity_type"]][row["date"]].add(row["user_id"])
    return {label: {date: len(users) for date, users in days.items()} for label, days in learners.items()}


def _chart_png(per_type: dict, dates: list, course_id: str) -> bytes:
    """Grouped bars: learners per day, one bar per activity type (pyplot-free, no global state)."""
    figure, axes = count_chart(max(6, len(dates) * 0.9), 4)
    width = 0.8 / len(ACTIVITY_TYPES)
    for index, label in enumerate(ACTIVITY_TYPES):
        counts = [per_type.get(label, {}).get(date, 0) for date in dates]
        axes.bar([d + index * width for d in range(len(dates))], counts, width=width, label=label)
    axes.set_xticks([d + 0.4 - width / 2 for d in range(len(dates))], dates, rotation=45, ha="right")
    axes.set_ylabel("learners")
    return png(figure, axes, f"Learners per day: {course_id}")


@view()
def user_activity_view(fs, query, course_id: str):
    """A chart of the learners active per day in a course, by activity type, and the totals.

    :param course_id: the course.
    :returns: an HTML page with the chart (a PNG in the module's file store) and a table.
    :raises BadParameter: the course is empty.
    """
    if not course_id.strip():
        raise BadParameter("course_id", "must not be empty")
    rows = query.user_activity(course_id=course_id)
    name = html.escape(course_id)
    if not rows:
        return f"<html><body><h1>Activity in {name}</h1><p>No activity yet.</p></body></html>"
    per_type = _learners_per_day(rows)
    dates = sorted({row["date"] for row in rows})
    filename = f"activity-{zlib.crc32(course_id.encode('utf-8')):08x}.png"
    with fs.open(filename, "wb") as handle:
        handle.write(_chart_png(per_type, dates, course_id))
    table = "".join(
        f"<tr><td>{html.escape(date)}</td>"
        + "".join(f"<td>{per_type.get(label, {}).get(date, 0)}</td>" for label in ACTIVITY_TYPES) + "</tr>"
        for date in dates)
    head = "".join(f"<th>{label}</th>" for label in ACTIVITY_TYPES)
    return (f"<html><body><h1>Activity in {name}</h1>"
            f'<img src="{html.escape(fs.get_url(filename))}" alt="Learners per day and activity type in {name}">'
            f"<table><tr><th>date</th>{head}</tr>{table}</table></body></html>")
