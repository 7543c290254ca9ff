"""Grade distribution: how a course's learners score on the problems they attempted.

A learner's grade in a course is the points of their latest server
``problem_check`` of each problem they attempted, over those problems' maximum
points (``grade`` and ``max_grade`` of the check). It is computed from the
``problem_response`` module's report (``query.problem_responses``), which keeps
each learner's latest attempt of each problem, so that module (and
``user_activity``, whose event properties it reads) must be installed.

Why ``problem_check`` and not ``edx.grades.*`` events: tracking logs of most
Open edX releases carry no course grade events, while every graded check logs
its points. The consequence: a problem a learner never attempted counts
neither for nor against them (events do not tell which problems a course has,
nor their weights), so the grade is a share of the points attempted, not the
course grade the LMS computes. A problem whose check carries no points, or a
maximum of 0, is left out.

- ``/query/learner_grades?course_id=``: ``[{"username", "score", "max_score", "grade"}]``.
- ``/query/grade_distribution?course_id=&bins=10``: ``[{"low", "high", "learners"}]``.
- ``/view/grade_distribution_view?course_id=``: the distribution as an inline SVG histogram.

Nothing is stored here: the answers are exact whenever ``problem_response``'s are,
which stays exact under at-least-once delivery.
"""
import html
import io

from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sandbox import BadParameter, query, view

MAX_BINS = 100


@query()
def learner_grades(query, course_id: str):
    """Each learner's grade in a course: points of their latest attempts over the maximum.

    :param course_id: the course, as its events name it.
    :returns: ``[{"username", "score", "max_score", "grade"}]`` ordered by username;
        ``grade`` is ``score / max_score``, from 0 to 1.
    """
    problems = {}
    for row in query.problem_responses(course_id=course_id):
        score, max_score = row["score"], row["max_score"]
        if score is not None and max_score:  # every part of a problem repeats its grade: keep one
            problems[(row["username"], row["problem_id"])] = (score, max_score)
    totals = {}
    for (username, _), (score, max_score) in problems.items():
        earned, possible = totals.get(username, (0.0, 0.0))
        totals[username] = (earned + score, possible + max_score)
    return [{"username": user, "score": earned, "max_score": possible, "grade": min(earned / possible, 1.0)}
            for user, (earned, possible) in sorted(totals.items())]


@query()
def grade_distribution(query, course_id: str, bins: int = 10):
    """How many learners of a course have a grade in each of ``bins`` equal ranges of [0, 1].

    :param course_id: the course.
    :param bins: how many ranges (1 to 100, default 10); a range holds its low end, the last also 1.
    :returns: ``[{"low", "high", "learners"}]`` from the lowest range up.
    :raises BadParameter: ``bins`` is out of range.
    """
    if not 1 <= bins <= MAX_BINS:
        raise BadParameter("bins", f"must be between 1 and {MAX_BINS}, got {bins}")
    counts = [0] * bins
    for row in query.learner_grades(course_id=course_id):
        counts[min(int(row["grade"] * bins), bins - 1)] += 1
    return [{"low": index / bins, "high": (index + 1) / bins, "learners": n} for index, n in enumerate(counts)]


def _histogram_svg(rows, course_id: str) -> str:
    """Bars of learners per grade range, as an ``<svg>`` element (pyplot-free, no global state)."""
    figure = Figure(figsize=(6, 3.5))
    canvas = FigureCanvasSVG(figure)
    axes = figure.add_subplot()
    width = rows[0]["high"] - rows[0]["low"]
    axes.bar([r["low"] * 100 for r in rows], [r["learners"] for r in rows], width=width * 100, align="edge",
             color="#4477aa", edgecolor="white")
    axes.set_xlim(0, 100)
    axes.set_xlabel("grade (% of the points attempted)")
    axes.set_ylabel("learners")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(f"Grade distribution: {course_id}")
    figure.tight_layout()
    buffer = io.StringIO()
    canvas.print_svg(buffer)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # the element only: no XML prolog inside HTML


@view()
def grade_distribution_view(query, course_id: str, bins: int = 10):
    """A histogram of the learners' grades in a course, and its table.

    :param course_id: the course.
    :param bins: how many grade ranges (1 to 100).
    :returns: an HTML page with an inline SVG chart.
    :raises BadParameter: the course is empty, or ``bins`` is out of range.
    """
    if not course_id.strip():
        raise BadParameter("course_id", "must not be empty")
    rows = query.grade_distribution(course_id=course_id, bins=bins)
    name = html.escape(course_id)
    learners = sum(r["learners"] for r in rows)
    if not learners:
        return f"<html><body><h1>Grades in {name}</h1><p>No graded attempts yet.</p></body></html>"
    table = "".join(f"<tr><td>{r['low']:.0%} to {r['high']:.0%}</td><td>{r['learners']}</td></tr>" for r in rows)
    return (f"<html><body><h1>Grades in {name}</h1><p>{learners} learners</p>{_histogram_svg(rows, course_id)}"
            f"<table><tr><th>grade</th><th>learners</th></tr>{table}</table></body></html>")
