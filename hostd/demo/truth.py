"""The ground truth of a demo stream: what the simulation did, in the shape analytics compare with.

The simulation reports every viewing (a contiguous stretch of a video played
from a ``play_video`` to the ``pause_video``, ``seek_video`` or ``stop_video``
that ends it), every problem submission and every event to a :class:`Truth`;
:meth:`Truth.as_dict` gives the JSON document ``hostd demo`` writes. Its keys:

``generator``
    seed, learners, weeks, start, course_id, events: how to make the stream again.
``counts``
    ``enrolled`` (learners), ``active`` (came back after enrolling), ``watched``
    (played a video), ``attempted`` (submitted a problem), ``passed`` (course
    grade at least ``pass_grade``), ``events``.
``learners``
    ``{username: {"user_id", "theta", "engagement", "enrolled_at", "last_week", "sessions", "grade",
    "passed"}}``; ``theta`` is the ability the answers were drawn from, ``engagement``
    what drove coming back and watching longer, ``last_week`` the week (from 0) after
    which the learner dropped out (``null``: never came back), ``grade`` the best
    scores summed over all the course's problems, as a fraction of the maximum.
``videos``
    ``{block id: {"usage_key", "pipeline_video_id", "encoded_module_id", "course_id", "code",
    "duration", "week", "segment_length", "viewers", "users_at_start", "users_at_end",
    "total_viewed_seconds", "timeline": [{"segment", "num_users", "num_views"}]}}``. A
    viewing from position ``s`` to ``e`` touches segments ``floor(s / L)`` to
    ``ceil(e / L) - 1`` (``L = segment_length`` seconds); ``num_views`` counts
    viewings, ``num_users`` learners, per touched segment; ``users_at_start`` and
    ``users_at_end`` are ``num_users`` of the first and of the last segment.
``problems``
    ``{problem_id: {"display_name", "week", "a", "b", "max_grade", "max_attempts", "attempted",
    "first_correct", "passed", "attempts"}}``: the 2PL parameters the answers
    were drawn from (``P(correct) = 1 / (1 + exp(-a (theta - b)))`` on the first
    attempt), how many learners submitted, were right the first time, were
    right in the end, and how many submissions there were.
``seconds_watched``
    ``{username: {video block id: seconds}}``, summed over viewings.
``attempts``
    ``{username: {problem_id: {"attempts", "first_correct", "correct", "score", "max_score",
    "first_attempt_date", "last_attempt_date", "answers"}}}`` from the server ``problem_check``
    events; ``score``, ``correct`` and ``answers`` (``{answer_id: {"question", "answer",
    "correct"}}``, one per part) are those of the last submission.
``daily_activity``
    ``{username: {date: {"ACTIVE", "PLAY_VIDEO", "ATTEMPT_PROBLEM"}}}``: that day's (UTC)
    events of the learner, its ``play_video`` events and its server ``problem_check`` events.
``per_day``
    ``{date: {"events", "learners", "enrollments", "play_video", "problem_check"}}``.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy

from .course import Course, Problem, Video
from .events import iso_time

__all__ = ["Truth", "SEGMENT_LENGTH_S", "PASS_GRADE"]

SEGMENT_LENGTH_S = 5
PASS_GRADE = 0.5
_ACTIVITY = ("ACTIVE", "PLAY_VIDEO", "ATTEMPT_PROBLEM")


class Truth:
    """Collects what the simulation did.

    :param course: the simulated course.
    :param generator: the generation settings, written as they are under ``generator``.
    """

    def __init__(self, course: Course, generator: dict):
        self.course = course
        self.generator = dict(generator)
        self.learners: dict[str, dict] = {}
        self._index: dict[str, int] = {}
        self.seconds = defaultdict(lambda: defaultdict(float))
        self.attempts = defaultdict(dict)
        self._views = {v.block: numpy.zeros(self._segments(v), dtype=numpy.int64) for v in course.videos}
        self._viewers = {v.block: set() for v in course.videos}
        self._segment_users = {v.block: defaultdict(set) for v in course.videos}
        self.daily = defaultdict(lambda: defaultdict(Counter))
        self.per_day = defaultdict(Counter)
        self._day_learners = defaultdict(set)

    @staticmethod
    def _segments(video: Video) -> int:
        return math.ceil(video.duration / SEGMENT_LENGTH_S)

    def learner(self, username: str, **info) -> None:
        """Record a learner: ``user_id``, ``theta``, ``enrolled_at`` and the like."""
        self._index[username] = len(self._index)
        self.learners[username] = dict(info)

    def viewing(self, username: str, video: Video, start: float, end: float) -> None:
        """Record that ``username`` played ``video`` from position ``start`` to ``end`` (seconds)."""
        self.seconds[username][video.block] += end - start
        first, last = int(start // SEGMENT_LENGTH_S), math.ceil(end / SEGMENT_LENGTH_S) - 1
        self._views[video.block][first:last + 1] += 1
        users = self._segment_users[video.block]
        for segment in range(first, last + 1):
            users[segment].add(username)
        self._viewers[video.block].add(username)

    def submission(self, username: str, problem: Problem, attempt: int, parts: list[bool], choices: list[int],
                   when: float) -> None:
        """Record a server ``problem_check``.

        :param attempt: the submission's number (from 1).
        :param parts: whether each part was right.
        :param choices: the choice picked in each part.
        :param when: its time (epoch seconds).
        """
        grade = sum(parts)
        correct = grade == problem.parts
        record = self.attempts[username].get(problem.usage_key)
        if record is None:
            record = self.attempts[username][problem.usage_key] = {
                "attempts": 0, "first_correct": correct, "first_attempt_date": iso_time(when),
                "max_score": problem.parts, "best_score": 0}
        record.update(attempts=attempt, correct=correct, score=grade, last_attempt_date=iso_time(when),
                      answers={aid: {"question": problem.question(n), "answer": problem.answer_text(choice),
                                     "correct": ok}
                               for n, (aid, ok, choice) in enumerate(zip(problem.answer_ids(), parts, choices))})
        record["best_score"] = max(record["best_score"], grade)

    def event(self, event: dict) -> None:
        """Count one event of the stream into the daily activity."""
        day = event["time"][:10]
        username, event_type = event["username"], event["event_type"]
        counts = self.daily[username][day]
        counts["ACTIVE"] += 1
        self.per_day[day]["events"] += 1
        self._day_learners[day].add(username)
        if event_type == "play_video":
            counts["PLAY_VIDEO"] += 1
            self.per_day[day]["play_video"] += 1
        elif event_type == "problem_check" and event["event_source"] == "server":
            counts["ATTEMPT_PROBLEM"] += 1
            self.per_day[day]["problem_check"] += 1
        elif event_type == "edx.course.enrollment.activated":
            self.per_day[day]["enrollments"] += 1

    # -- the document ----------------------------------------------------------------

    def _grade(self, username: str) -> float:
        total = sum(p.parts for p in self.course.problems)
        earned = sum(r["best_score"] for r in self.attempts.get(username, {}).values())
        return earned / total if total else 0.0

    def _video(self, video: Video) -> dict:
        views = self._views[video.block]
        users = self._segment_users[video.block]
        timeline = [{"segment": int(s), "num_users": len(users[s]), "num_views": int(views[s])}
                    for s in numpy.flatnonzero(views)]
        return {"usage_key": video.usage_key, "course_id": self.course.course_id,
                "pipeline_video_id": f"{self.course.course_id}|{video.block}", "encoded_module_id": video.block,
                "code": video.code, "duration": video.duration, "week": video.week,
                "segment_length": SEGMENT_LENGTH_S, "viewers": len(self._viewers[video.block]),
                "users_at_start": len(users[0]), "users_at_end": len(users[len(views) - 1]),
                "total_viewed_seconds": round(sum(seconds.get(video.block, 0.0) for seconds in self.seconds.values()),
                                              3),
                "timeline": timeline}

    def _problem(self, problem: Problem) -> dict:
        records = [r[problem.usage_key] for r in self.attempts.values() if problem.usage_key in r]
        return {"display_name": problem.display_name, "week": problem.week, "a": problem.a, "b": problem.b,
                "max_grade": problem.parts, "max_attempts": problem.max_attempts, "attempted": len(records),
                "first_correct": sum(r["first_correct"] for r in records),
                "passed": sum(r["best_score"] == problem.parts for r in records),
                "attempts": sum(r["attempts"] for r in records)}

    def as_dict(self) -> dict:
        """:returns: the truth document (JSON-able; see the module's docstring)."""
        learners = {}
        for username, info in self.learners.items():
            grade = self._grade(username)
            learners[username] = {**info, "grade": round(grade, 6), "passed": grade >= PASS_GRADE}
        attempts = {user: {pid: {k: v for k, v in r.items() if k != "best_score"} for pid, r in records.items()}
                    for user, records in self.attempts.items()}
        per_day = {day: {"events": c["events"], "learners": len(self._day_learners[day]),
                         "enrollments": c["enrollments"], "play_video": c["play_video"],
                         "problem_check": c["problem_check"]} for day, c in sorted(self.per_day.items())}
        return {
            "format": "insights-demo-truth/1",
            "generator": self.generator,
            "course": {"course_id": self.course.course_id, "org_id": self.course.org_id,
                       "weeks": self.course.weeks, "pass_grade": PASS_GRADE},
            "counts": {"enrolled": len(learners),
                       "active": sum(info["sessions"] > 0 for info in learners.values()),
                       "watched": sum(1 for s in self.seconds.values() if s),
                       "attempted": len(attempts),
                       "passed": sum(info["passed"] for info in learners.values()),
                       "events": sum(c["events"] for c in self.per_day.values())},
            "learners": learners,
            "videos": {v.block: self._video(v) for v in self.course.videos},
            "problems": {p.usage_key: self._problem(p) for p in self.course.problems},
            "seconds_watched": {u: {v: round(s, 3) for v, s in videos.items()} for u, videos in self.seconds.items()},
            "attempts": attempts,
            "daily_activity": {u: {d: {k: c[k] for k in _ACTIVITY} for d, c in sorted(days.items())}
                               for u, days in self.daily.items()},
            "per_day": per_day,
        }
