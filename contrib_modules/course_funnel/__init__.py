"""Course funnel: how many learners of a course went from enrolment to a pass.

Each stage counts the learners of the previous one who also did its step, so
the four numbers never grow:

``enrolled``
    learners with a server ``edx.course.enrollment.activated`` event in the
    course (the learner is the event data's ``user_id``: the event's own user
    may be staff enrolling them);
``watched``
    enrolled learners with a ``play_video`` from the browser or the mobile app;
``attempted``
    learners who watched and sent a server ``problem_check`` (the browser's
    copy of a check is no attempt);
``passed``
    learners who attempted and whose grade, as ``grade_distribution`` computes
    it (points of their latest attempts over those problems' maximum), is at
    least ``pass_threshold`` (default 0.5). Tracking logs carry no course
    pass/fail event, hence a threshold.

Learners are ``context.user_id`` (``evt.edx_pipeline.user_id``) and courses
``evt.edx_pipeline.course_id``, as ``user_activity`` reads them; ``passed`` asks
``grade_distribution`` (which asks ``problem_response``), so those three
modules must be installed. A learner enrolled before the log began is not
``enrolled`` here, and neither are their later steps: replay the log from the
course's start.

Storage is one document per (course, stage, learner), written with an upsert
of the same fields each time: a repeated event changes nothing, so the counts
are exact under at-least-once delivery.

- ``/query/course_funnel?course_id=&pass_threshold=0.5``: ``[{"stage", "learners"}]``.
- ``/view/course_funnel_view?course_id=``: the funnel as inline SVG bars.
"""
import html
import json
import math

from pymongo import UpdateOne

from sandbox import BadParameter, event_handler, query, view

STAGES = ("enrolled", "watched", "attempted", "passed")
STEPS = "funnel_steps"
ENROLLED = "edx.course.enrollment.activated"


def _step(evt) -> tuple | None:
    """:returns: ``(stage, learner)`` of an event that is a funnel step, else None."""
    event_type, source = evt.get("event_type"), evt.get("event_source")
    if event_type == ENROLLED and source == "server":
        learner = (evt.edx_pipeline.event_data or {}).get("user_id")
        return ("enrolled", learner) if isinstance(learner, int) and not isinstance(learner, bool) else None
    if event_type == "play_video" and source in ("browser", "mobile"):
        return "watched", evt.edx_pipeline.user_id
    if event_type == "problem_check" and source == "server":
        return "attempted", evt.edx_pipeline.user_id
    return None


def _doc_id(course_id: str, stage: str, learner) -> str:
    # JSON: unambiguous whatever the parts hold, and never starting with a date
    # (the embedded store mis-compares _ids that do).
    return json.dumps([course_id, stage, learner], separators=(",", ":"))


@event_handler(filter={"event_type": {"$in": [ENROLLED, "play_video", "problem_check"]}})
def record_steps(db, events):
    """Note each (course, stage, learner) the batch shows: one bulk upsert, idempotent."""
    writes = {}
    for evt in events:
        step, course_id = _step(evt), evt.edx_pipeline.course_id
        if step is None or step[1] is None or not course_id:
            continue
        stage, learner = step
        fields = {"course_id": course_id, "stage": stage, "learner": learner}
        if stage == "attempted":
            fields["username"] = evt.get("username")  # grades are per username
        writes[_doc_id(course_id, stage, learner)] = fields
    if writes:
        db[STEPS].create_index("course_id", name="course_id")  # a no-op once it exists
        db[STEPS].bulk_write([UpdateOne({"_id": doc_id}, {"$set": fields}, upsert=True)
                              for doc_id, fields in writes.items()], ordered=False)


@query()
def course_funnel(db, query, course_id: str, pass_threshold: float = 0.5):
    """Learners at each stage of a course's funnel (see the module's documentation for each stage).

    :param course_id: the course, as its events name it.
    :param pass_threshold: the lowest grade (0 to 1) that passes.
    :returns: ``[{"stage", "learners"}]`` for enrolled, watched, attempted and passed, in that order.
    :raises BadParameter: ``pass_threshold`` is outside [0, 1].
    """
    if not (0.0 <= pass_threshold <= 1.0 and math.isfinite(pass_threshold)):
        raise BadParameter("pass_threshold", f"must be between 0 and 1, got {pass_threshold}")
    learners = {stage: set() for stage in STAGES}
    usernames = {}
    for doc in db[STEPS].find({"course_id": course_id}):
        learners[doc["stage"]].add(doc["learner"])
        if doc["stage"] == "attempted":
            usernames[doc["learner"]] = doc.get("username")
    graded = {row["username"] for row in query.learner_grades(course_id=course_id) if row["grade"] >= pass_threshold}
    learners["passed"] = {learner for learner, name in usernames.items() if name in graded}
    reached, counts = None, []
    for stage in STAGES:
        reached = learners[stage] if reached is None else reached & learners[stage]
        counts.append({"stage": stage, "learners": len(reached)})
    return counts


def _funnel_svg(rows) -> str:
    """Centred horizontal bars, one per stage, widths in proportion to the first."""
    top = max(rows[0]["learners"], 1)
    bars = []
    for index, row in enumerate(rows):
        width = 400 * row["learners"] / top
        y = 10 + index * 40
        bars.append(f'<rect x="{260 - width / 2:.1f}" y="{y}" width="{width:.1f}" height="30" fill="#4477aa"/>'
                    f'<text x="10" y="{y + 20}">{row["stage"]}</text>'
                    f'<text x="470" y="{y + 20}">{row["learners"]}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="520" height="{20 + 40 * len(rows)}" '
            f'role="img" aria-label="course funnel">{"".join(bars)}</svg>')


@view()
def course_funnel_view(query, course_id: str, pass_threshold: float = 0.5):
    """The funnel of a course as bars and a table.

    :param course_id: the course.
    :param pass_threshold: the lowest grade (0 to 1) that passes.
    :returns: an HTML page with an inline SVG chart.
    :raises BadParameter: the course is empty.
    """
    if not course_id.strip():
        raise BadParameter("course_id", "must not be empty")
    rows = query.course_funnel(course_id=course_id, pass_threshold=pass_threshold)
    table = "".join(f"<tr><td>{r['stage']}</td><td>{r['learners']}</td></tr>" for r in rows)
    return (f"<html><body><h1>Funnel of {html.escape(course_id)}</h1>{_funnel_svg(rows)}"
            f"<table><tr><th>stage</th><th>learners</th></tr>{table}</table>"
            f"<p>Passing grade: {pass_threshold:.0%} of the points attempted.</p></body></html>")
