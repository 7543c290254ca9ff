"""Video: which parts of each video learners watched, in 5-second segments.

This is the Open edX analytics pipeline's video workflow
(edx-analytics-pipeline's ``UserVideoViewingTask``, ``VideoUsageTask`` and the
``video`` and ``video_timeline`` tables they fill).
``viewings.py`` holds its arithmetic; this file stores events and answers.

* A video is a course (``evt.edx_pipeline.course_id``: the context's, else
  the URL's) and the ``id`` of the event data (the "encoded module id"), and
  its ``pipeline_video_id`` is ``"<course_id>|<encoded_module_id>"``.
* ``play_video``, ``pause_video``, ``seek_video`` and ``stop_video`` with a
  ``context.user_id`` and valid offsets (a number in [0, 10 h]: play, pause
  and stop ``currentTime``, a pause without one being at 0; seek ``old_time``
  and ``new_time``) are sorted per learner and video by time and paired into
  *viewings*: see :func:`viewings.viewings` (a seek ends a viewing at its
  ``old_time`` and the next play starts at its ``new_time``; viewings shorter
  than 0.25 s, ending before they start or past the end of the video are
  dropped).
* Each viewing covers the segments from ``int(start) // 5`` to ``int(end) // 5``;
  ``num_views`` counts viewings, ``num_users`` learners. The duration is the
  longest one the events gave, or unknown if any viewing's was; an unknown one
  ends at the last segment before learners drop to 5 % or less, and is
  ``(last segment + 1) * 5 - 1``. Rows stop at the video's last segment.
  ``users_at_end`` counts learners in the segment at ``max(duration - 30,
  0.95 * duration)``; ``total_viewed_seconds`` is 5 × the views of the rows.

``/query/video_info`` gives one row per video, ``/query/video_timeline?pipeline_video_id=``
its segments and ``/view/video_view?pipeline_video_id=`` charts them.

Delivery is at least once and a viewing needs events that may come in
different batches and out of time order, so the handler keeps each video event
under its log identity (writing it again changes nothing), and then recomputes
from all of them the viewings of each learner-video pair the batch touched.
The answers are computed from those viewings when asked.

Deviations from the pipeline: it fetches the duration of YouTube videos from
the YouTube API when given a key; this module has no network, so such a video
has the duration its events give or an unknown one (as the pipeline without a
key). It processes a date interval and keeps viewings starting in it; this
module keeps every event. Events with the same time, type and offsets are
ordered by duration here, by YouTube id and then duration there. Where a
malformed event would stop the pipeline's job (a ``user_id`` that is no
number, a module ``id`` that is no string, a ``duration`` given as a string),
this module drops the event, or takes the duration as unknown.
"""
import html
import json
import zlib
from collections import defaultdict

from pymongo import UpdateOne

from sandbox import BadParameter, event_handler, query, view
from sandbox.charts import count_chart, png

from .viewings import SEGMENT_SECONDS, VIDEO_EVENT_TYPES, usage, video_event, viewings

EVENTS = "video_events"
VIEWINGS = "user_viewings"


def _pair_id(user_id: int, course_id: str, module: str) -> str:
    # JSON: unambiguous whatever the parts hold, and never starting with a date
    # (the embedded store mis-compares _ids that do).
    return json.dumps([user_id, course_id, module], separators=(",", ":"))


@event_handler(filter={"event_type": {"$in": list(VIDEO_EVENT_TYPES)}})
def track_viewings(db, events):
    """Keep the batch's video events by identity, then recompute the viewings of the pairs it touched."""
    stored = {}
    for evt in events:
        context = evt.event.get("context")
        found = video_event(evt.event.get("event_type"), evt.edx_pipeline.time,
                            context.get("user_id") if isinstance(context, dict) else None,
                            evt.edx_pipeline.course_id, evt.edx_pipeline.event_data)
        if found is not None:
            stored[evt.meta["id"]] = dict(found, pair=_pair_id(found["user_id"], found["course_id"], found["module"]))
    if not stored:
        return
    # Here rather than at import (no side effects there); a no-op once the indexes exist.
    db[EVENTS].create_index("pair", name="pair")
    db[VIEWINGS].create_index("pipeline_video_id", name="pipeline_video_id")
    # A fixed prefix: an event id may be anything, and the embedded store mis-compares
    # _ids that start with a date.
    db[EVENTS].bulk_write([UpdateOne({"_id": f"e|{eid}"}, {"$set": doc}, upsert=True)
                           for eid, doc in stored.items()], ordered=False)
    by_pair = defaultdict(list)
    for doc in db[EVENTS].find({"pair": {"$in": sorted({d["pair"] for d in stored.values()})}}):
        by_pair[doc["pair"]].append(doc)
    db[VIEWINGS].bulk_write([
        UpdateOne({"_id": pair}, {"$set": {
            "user_id": docs[0]["user_id"], "course_id": docs[0]["course_id"], "module": docs[0]["module"],
            "pipeline_video_id": f"{docs[0]['course_id']}|{docs[0]['module']}",
            "viewings": [list(v) for v in viewings(docs)]}}, upsert=True)
        for pair, docs in by_pair.items()], ordered=False)


def _usage_by_video(docs) -> dict:
    """:returns: ``{pipeline_video_id: (course_id, module, usage)}`` for videos with a viewing."""
    grouped = defaultdict(list)
    for doc in docs:
        grouped[(doc["pipeline_video_id"], doc["course_id"], doc["module"])].append(
            (doc["user_id"], [tuple(v) for v in doc["viewings"]]))
    found = {}
    for (video_id, course_id, module), by_user in grouped.items():
        stats = usage(by_user)
        if stats is not None:
            found[video_id] = (course_id, module, stats)
    return found


@query()
def video_info(db):
    """One summary row per video that has been watched.

    :returns: ``[{"pipeline_video_id", "course_id", "encoded_module_id", "duration", "segment_length",
        "users_at_start", "users_at_end", "total_viewed_seconds"}]`` ordered by ``pipeline_video_id``.
    """
    found = _usage_by_video(db[VIEWINGS].find({}, {"_id": 0}))
    return [{"pipeline_video_id": video_id, "course_id": course_id, "encoded_module_id": module,
             **{key: stats[key] for key in ("duration", "segment_length", "users_at_start", "users_at_end",
                                            "total_viewed_seconds")}}
            for video_id, (course_id, module, stats) in sorted(found.items())]


@query()
def video_timeline(db, pipeline_video_id: str):
    """The watched segments of one video.

    :param pipeline_video_id: ``"<course_id>|<encoded_module_id>"``.
    :returns: ``[{"segment", "num_users", "num_views"}]`` by segment; empty for an unwatched video.
    """
    found = _usage_by_video(db[VIEWINGS].find({"pipeline_video_id": pipeline_video_id}, {"_id": 0}))
    return found[pipeline_video_id][2]["segments"] if pipeline_video_id in found else []


def _timeline_png(rows, title: str) -> bytes:
    """Bars of learners and views per segment (pyplot-free, so no global figure state)."""
    figure, axes = count_chart(7, 4)
    starts = [row["segment"] * SEGMENT_SECONDS for row in rows]
    width = SEGMENT_SECONDS * 0.92  # a gap between segments
    axes.bar(starts, [row["num_views"] for row in rows], width=width, align="edge", color="#bbccee", label="views")
    axes.bar(starts, [row["num_users"] for row in rows], width=width, align="edge", color="#4477aa",
             label="learners")
    axes.set_xlabel("seconds into the video")
    axes.set_ylabel("count")
    return png(figure, axes, title)


@view()
def video_view(db, fs, pipeline_video_id: str):
    """A chart of a video's timeline: learners and views per 5-second segment.

    :param pipeline_video_id: ``"<course_id>|<encoded_module_id>"``.
    :returns: an HTML page with the video's summary and the chart (a PNG in the module's file store).
    :raises BadParameter: the id is not ``course|module``.
    """
    if "|" not in pipeline_video_id:
        raise BadParameter("pipeline_video_id", "must be <course_id>|<encoded_module_id>")
    found = _usage_by_video(db[VIEWINGS].find({"pipeline_video_id": pipeline_video_id}, {"_id": 0}))
    name = html.escape(pipeline_video_id)
    if pipeline_video_id not in found:
        return f"<html><body><h1>Video {name}</h1><p>Nobody has watched it yet.</p></body></html>"
    stats = found[pipeline_video_id][2]
    filename = f"timeline-{zlib.crc32(pipeline_video_id.encode('utf-8')):08x}.png"
    with fs.open(filename, "wb") as handle:
        handle.write(_timeline_png(stats["segments"], f"Timeline of {found[pipeline_video_id][1]}"))
    return (f"<html><body><h1>Video {name}</h1>"
            f"<p>duration {stats['duration']} s, {stats['users_at_start']} learners at the start, "
            f"{stats['users_at_end']} at the end, {stats['total_viewed_seconds']} s watched</p>"
            f'<img src="{html.escape(fs.get_url(filename))}" alt="Learners and views per segment of {name}">'
            "</body></html>")
