"""The synthetic course: weeks of videos and problems, with the item parameters behind the problems.

Each week is a chapter with two subsections (sequentials): a lecture of videos
and a problem set. Block ids are 32 hex digits drawn from the generator, so a
seed always gives the same course. Every problem carries the 2PL item
parameters the learners' answers are drawn from: discrimination ``a``
(log-normal around 1) and difficulty ``b`` (standard normal).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy

__all__ = ["Video", "Problem", "Sequential", "Course", "build_course", "VIDEOS_PER_WEEK", "PROBLEMS_PER_WEEK"]

VIDEOS_PER_WEEK = 3
PROBLEMS_PER_WEEK = 5
_YOUTUBE_ALPHABET = numpy.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))


@dataclass(frozen=True)
class Video:
    """A video block.

    :param block: its block id (32 hex digits), the ``id`` of its browser events.
    :param usage_key: its ``block-v1:...+type@video+block@...`` key.
    :param code: its YouTube id (the ``code`` of its events).
    :param duration: its length in seconds.
    :param week: the week (from 0) it belongs to.
    """

    block: str
    usage_key: str
    code: str
    duration: int
    week: int


@dataclass(frozen=True)
class Problem:
    """A capa problem of one or more parts, each an answer id ``<block>_<n>_1``.

    :param block: its block id (32 hex digits).
    :param usage_key: its ``block-v1:...+type@problem+block@...`` key, the ``problem_id`` of its events.
    :param display_name: its title.
    :param parts: how many inputs it has (its ``max_grade``).
    :param max_attempts: how many submissions a learner may make.
    :param a: 2PL discrimination.
    :param b: 2PL difficulty.
    :param week: the week (from 0) it belongs to.
    """

    block: str
    usage_key: str
    display_name: str
    parts: int
    max_attempts: int
    a: float
    b: float
    week: int

    def answer_ids(self) -> list[str]:
        """:returns: the ids of its inputs, as in ``event.answers``."""
        return [f"{self.block}_{part + 2}_1" for part in range(self.parts)]

    def question(self, part: int) -> str:
        """:returns: the text of part ``part`` (from 0), as in ``event.submission[...]["question"]``."""
        return f"{self.display_name}, part {part + 1}"

    @staticmethod
    def answer_text(choice: int) -> str:
        """:returns: the text of choice ``choice`` (0 is the right one) of any part."""
        return f"Option {'ABCD'[choice]}"


@dataclass(frozen=True)
class Sequential:
    """A subsection: a page of units (videos or problems) reached at ``/courseware/<chapter>/<block>/``.

    :param chapter: the block id of its chapter (the week).
    :param block: its own block id.
    :param usage_key: its ``block-v1:...+type@sequential+block@...`` key.
    :param units: its videos or problems, in tab order.
    """

    chapter: str
    block: str
    usage_key: str
    units: tuple

    def path(self, course_id: str) -> str:
        """:returns: the LMS path of its page (the ``event_type`` of a server page view)."""
        return f"/courses/{course_id}/courseware/{self.chapter}/{self.block}/"


@dataclass(frozen=True)
class Course:
    """The whole course.

    :param course_id: ``course-v1:ORG+NUMBER+RUN``.
    :param weeks: how many weeks (one chapter each).
    :param sequentials: every subsection in course order.
    """

    course_id: str
    weeks: int
    sequentials: tuple

    @property
    def org_id(self) -> str:
        """The organisation part of the course id."""
        return self.course_id.split(":", 1)[1].split("+", 1)[0]

    @property
    def videos(self) -> list[Video]:
        """Every video, in course order."""
        return [u for s in self.sequentials for u in s.units if isinstance(u, Video)]

    @property
    def problems(self) -> list[Problem]:
        """Every problem, in course order."""
        return [u for s in self.sequentials for u in s.units if isinstance(u, Problem)]

    def usage_key(self, kind: str, block: str) -> str:
        """:returns: the ``block-v1`` usage key of a block of this course."""
        return f"block-v1:{self.course_id.split(':', 1)[1]}+type@{kind}+block@{block}"


def _hex_ids(rng: numpy.random.Generator, count: int) -> list[str]:
    return [f"{int(high):016x}{int(low):016x}" for high, low in rng.integers(0, 2**63, size=(count, 2))]


def build_course(rng: numpy.random.Generator, weeks: int, course_id: str) -> Course:
    """Draw a course of ``weeks`` weeks.

    :param rng: the generator the course is drawn from.
    :param weeks: number of weeks (chapters), at least 1.
    :param course_id: the course's id, ``course-v1:ORG+NUMBER+RUN``.
    :returns: the course.
    """
    per_week = 1 + 2 + VIDEOS_PER_WEEK + PROBLEMS_PER_WEEK  # chapter, two sequentials, units
    ids = iter(_hex_ids(rng, weeks * per_week))
    template = Course(course_id, weeks, ())
    sequentials = []
    for week in range(weeks):
        chapter = next(ids)
        videos = tuple(
            Video(block, template.usage_key("video", block),
                  "".join(rng.choice(_YOUTUBE_ALPHABET, 11)), int(rng.integers(150, 900)), week)
            for block in (next(ids) for _ in range(VIDEOS_PER_WEEK)))
        problems = tuple(
            Problem(block, template.usage_key("problem", block), f"Week {week + 1} question {n + 1}",
                    parts=int(rng.choice([1, 1, 1, 2, 3])), max_attempts=int(rng.choice([2, 3, 5])),
                    a=float(numpy.clip(rng.lognormal(0.0, 0.35), 0.35, 3.0)), b=float(rng.normal(0.0, 1.0)),
                    week=week)
            for n, block in enumerate(next(ids) for _ in range(PROBLEMS_PER_WEEK)))
        for units in (videos, problems):
            block = next(ids)
            sequentials.append(Sequential(chapter, block, template.usage_key("sequential", block), units))
    return Course(course_id, weeks, tuple(sequentials))
