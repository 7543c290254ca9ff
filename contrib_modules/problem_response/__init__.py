"""Problem responses: each learner's latest answer to each question of a course's problems.

This is the Open edX analytics pipeline's problem response report
(edx-analytics-pipeline's ``ProblemResponseReportWorkflow``; the rows come
from its ``LatestProblemResponseDataTask``), the CSV Insights offers
instructors. ``answers.py`` holds its arithmetic.

* An *attempt* is a ``problem_check`` event from the server (the browser's
  copy is not one) with a ``time``, a non-blank ``username``, a context whose
  ``course_id`` is a valid course key (never taken from the URL), a
  ``problem_id`` and at least one answer.
* Per course, problem and learner, the attempts are ordered by time:
  ``total_attempts`` counts them, ``first_attempt_date`` and
  ``last_attempt_date`` are the first and the last, and the last gives the
  rows: one per answer (``answer_id``) that is not a hidden ``_dynamath`` or
  ``_comment`` part, with the problem's ``grade`` and ``max_grade`` as
  ``score`` and ``max_score``, ``correct`` True, False or None (correctness
  ``unknown`` or absent), the part's ``question``, and the ``answer`` (a list:
  one text, or one per checked box) with whitespace runs made one space and
  ``<choicehint>`` feedback removed, as the pipeline's default cleaning does.
  Events without submission texts (old ones) give the raw answer values.

``/query/problem_responses?course_id=`` gives ``[{"username", "problem_id",
"answer_id", "question", "score", "max_score", "correct", "answer",
"total_attempts", "first_attempt_date", "last_attempt_date"}]`` ordered by
learner, problem and answer; dates are UTC in ISO 8601
(``2016-09-07T04:57:21.465996+00:00``). ``/view/problem_responses_view?course_id=``
charts how many learners' latest answers are right or wrong, per problem.

Delivery is at least once, so each course-problem-learner document is updated
only with operations that an event repeated cannot change: the attempt's log
identity is added to a set (``$addToSet``; ``total_attempts`` is its size),
the first time is a ``$min`` and the latest attempt a ``$max`` over
``"<time>\\t<its data as canonical JSON>"``, which orders as the pipeline's
``sorted((timestamp, data))`` does (the tab sorts before any character that
follows a time).

Deviations from the pipeline: the report also has ``course_id``, the
problem's display name and its location in the course from the course
structure, which events do not give; it covers a date interval, this module
every event. Attempts logged at the same microsecond are ordered by their
canonical JSON here, by Python 2's dict order there. Its CSV writes the
answer list with a configured delimiter; here it is a JSON list. Where a
malformed event would stop the pipeline's job (a submission that is not an
object, a correctness map entry that is null, a grade that is no number), this
module skips that part, takes its correctness as unknown or its score as None.
"""
import html
import json
import zlib
from collections import Counter, defaultdict

from pymongo import UpdateOne

from sandbox import BadParameter, event_handler, query, view
from sandbox.charts import count_chart, png

from .answers import answer_rows, attempt, report_time

ATTEMPTS = "latest_attempts"
_SEPARATOR = "\t"


def _key_id(course_id: str, problem_id: str, username: str) -> str:
    # JSON: unambiguous whatever the parts hold, and never starting with a date
    # (the embedded store mis-compares _ids that do).
    return json.dumps([course_id, problem_id, username], separators=(",", ":"))


@event_handler(filter={"event_type": "problem_check", "event_source": "server"})
def record_attempts(db, events):
    """Fold each attempt into its course-problem-learner document: one bulk write per batch, idempotent."""
    updates = []
    for evt in events:
        found = attempt(evt.event, evt.edx_pipeline.time, evt.edx_pipeline.context_course_id,
                        evt.edx_pipeline.event_data)
        if found is None:
            continue
        (course_id, problem_id, username), timestamp, data = found
        latest = timestamp + _SEPARATOR + json.dumps(data, sort_keys=True, separators=(",", ":"))
        updates.append(UpdateOne(
            {"_id": _key_id(course_id, problem_id, username)},
            {"$addToSet": {"attempts": evt.meta["id"]}, "$min": {"first": timestamp}, "$max": {"latest": latest},
             "$setOnInsert": {"course_id": course_id, "problem_id": problem_id, "username": username}},
            upsert=True))
    if updates:
        db[ATTEMPTS].bulk_write(updates, ordered=False)


@query()
def problem_responses(db, course_id: str):
    """The latest answer of each learner to each question of a course.

    :param course_id: the course, as its events name it.
    :returns: ``[{"username", "problem_id", "answer_id", "question", "score", "max_score", "correct",
        "answer", "total_attempts", "first_attempt_date", "last_attempt_date"}]``.
    """
    rows = []
    for doc in db[ATTEMPTS].find({"course_id": course_id}):
        last, data = doc["latest"].split(_SEPARATOR, 1)
        common = {"total_attempts": len(doc["attempts"]), "first_attempt_date": report_time(doc["first"]),
                  "last_attempt_date": report_time(last)}
        for part in answer_rows(json.loads(data)):
            rows.append({"username": doc["username"], "problem_id": doc["problem_id"], "answer_id": part["answer_id"],
                         "question": part["question"], "score": part["score"], "max_score": part["max_score"],
                         "correct": part["correct"], "answer": part["answer"], **common})
    return sorted(rows, key=lambda r: (r["username"], r["problem_id"], r["answer_id"]))


def _short(problem_id: str) -> str:
    """:returns: a problem's block id (what follows the last ``@``), for a chart label."""
    return problem_id.rsplit("@", 1)[-1][:12]


def _tally(rows) -> dict:
    """:returns: ``{problem_id: Counter(correct / incorrect / unknown)}`` of learners' latest answers."""
    tally = defaultdict(Counter)
    for row in rows:
        tally[row["problem_id"]][{True: "correct", False: "incorrect"}.get(row["correct"], "unknown")] += 1
    return tally


def _chart_png(tally: dict, course_id: str) -> bytes:
    """Stacked horizontal bars per problem (pyplot-free, so no global figure state)."""
    problems = sorted(tally)
    figure, axes = count_chart(7, 1.5 + 0.4 * len(problems))
    left = [0] * len(problems)
    for outcome, colour in (("correct", "#228833"), ("incorrect", "#ee6677"), ("unknown", "#bbbbbb")):
        counts = [tally[p][outcome] for p in problems]
        axes.barh(range(len(problems)), counts, left=left, color=colour, label=outcome)
        left = [a + b for a, b in zip(left, counts)]
    axes.set_yticks(range(len(problems)), [_short(p) for p in problems])
    axes.set_xlabel("answers (latest attempt of each learner)")
    return png(figure, axes, f"Latest answers: {course_id}", counts_on="x")


@view()
def problem_responses_view(fs, query, course_id: str):
    """A chart of the learners' latest answers per problem (right, wrong, unknown) and their counts.

    :param course_id: the course.
    :returns: an HTML page with the chart (a PNG in the module's file store) and a table.
    :raises BadParameter: the course is empty.
    """
    if not course_id.strip():
        raise BadParameter("course_id", "must not be empty")
    rows = query.problem_responses(course_id=course_id)
    name = html.escape(course_id)
    if not rows:
        return f"<html><body><h1>Problem responses in {name}</h1><p>No attempt yet.</p></body></html>"
    tally = _tally(rows)
    filename = f"responses-{zlib.crc32(course_id.encode('utf-8')):08x}.png"
    with fs.open(filename, "wb") as handle:
        handle.write(_chart_png(tally, course_id))
    table = "".join(
        f"<tr><td>{html.escape(problem)}</td><td>{counts['correct']}</td><td>{counts['incorrect']}</td>"
        f"<td>{counts['unknown']}</td></tr>" for problem, counts in sorted(tally.items()))
    return (f"<html><body><h1>Problem responses in {name}</h1>"
            f'<img src="{html.escape(fs.get_url(filename))}" alt="Latest answers per problem in {name}">'
            "<table><tr><th>problem</th><th>correct</th><th>incorrect</th><th>unknown</th></tr>"
            f"{table}</table></body></html>")
