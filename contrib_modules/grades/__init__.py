"""Grades: simulated grades of a course, and a histogram of each student's mean grade.

``/query/get_grades?course=X`` gives 1000 students × 4 assignments of grades
around 70 (always the same ones for one course); ``/view/plot_grades?course=X``
draws the distribution of the students' mean grades as a PNG in the module's
file store and shows it.
"""
import html
import io
import re
import zlib

import numpy
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sandbox import BadParameter, query, view

STUDENTS = 1000
ASSIGNMENTS = 4
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def _seed(course: str) -> int:
    """:returns: a seed that depends only on the course name (stable across processes)."""
    return zlib.crc32(course.encode("utf-8"))


def plot_filename(course: str) -> str:
    """:returns: a file name for the course's plot that is safe in the file store and in a URL.

    The name keeps a readable part of the course (unsafe characters replaced) and a
    checksum of the whole name, so two courses never share a file.
    """
    slug = _UNSAFE.sub("_", course).strip("_")[:40] or "course"
    return f"grades-{slug}-{_seed(course):08x}.png"


def _histogram_png(means, course: str) -> bytes:
    """Draw the histogram without pyplot, so no global figure state is involved."""
    figure = Figure(figsize=(6, 4), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.hist(means, bins=30, color="#4477aa", edgecolor="white")
    axes.set_title(f"Mean grade per student: {course}")
    axes.set_xlabel("mean grade")
    axes.set_ylabel("students")
    figure.tight_layout()
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    return buffer.getvalue()


@query()
def get_grades(course: str):
    """Simulated grades of a course: 1000 students × 4 assignments, around 70.

    :param course: the course's name; the same name always gives the same grades.
    :returns: a list of 1000 rows of 4 floats.
    """
    rng = numpy.random.default_rng(_seed(course))
    return (3 * rng.standard_normal((STUDENTS, ASSIGNMENTS)) + 70).tolist()


@view()
def plot_grades(fs, query, course: str):
    """A histogram of the students' mean grades in a course.

    :param course: the course's name.
    :returns: an HTML fragment showing the plot through a signed file-store URL.
    :raises BadParameter: the course name is empty.
    """
    if not course.strip():
        raise BadParameter("course", "must not be empty")
    grades = numpy.asarray(query.get_grades(course=course), dtype=float)
    means = grades.mean(axis=1)
    filename = plot_filename(course)
    with fs.open(filename, "wb") as handle:
        handle.write(_histogram_png(means, course))
    name = html.escape(course)
    url = html.escape(fs.get_url(filename))
    return (f"<html><body><h1>Grades of {name}</h1>"
            f"<p>{len(means)} students, mean grade {means.mean():.1f}</p>"
            f'<img src="{url}" alt="Histogram of mean grades in {name}">'
            "</body></html>")
