"""The learners: who enrols, when they come, what they watch and answer, when they drop out.

Each learner has an ability ``theta ~ N(0, 1)`` and an engagement correlated
with it (0.3). They enrol around the course start, then come back week after
week, each week with a probability that grows with engagement (who does not
come back has dropped out for good). A week brings a few sessions, mostly in
the afternoon and evening (UTC); a session works through the next units of the
course released so far, in order (a learner late on the schedule catches up),
and once caught up sometimes re-watches an earlier video.

A video is played in stretches: each ends with a pause (then, often, play
again), a seek forwards or backwards (then play from there), a stop at the end,
or a pause when the learner leaves; so every play is closed and the seconds
watched follow from the events. A problem is submitted until right, out of
attempts, or given up; submission ``k`` is right with probability
``1 / (1 + exp(-a (theta + 0.5 (k - 1) - b)))`` (2PL on the first attempt, then
some learning from the feedback). Each learner draws from a generator of their
own, spawned from the seed, so a learner's behaviour does not depend on how
many others there are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy

from .course import Course, Problem, Sequential, Video, build_course
from .events import Client, iso_time
from .truth import Truth

__all__ = ["Demo", "generate", "DEFAULT_COURSE_ID", "DEFAULT_START"]

DEFAULT_COURSE_ID = "course-v1:InsightsX+IRT101+2026_T1"
DEFAULT_START = "2026-01-05"
DAY_S = 86400.0
WEEK_S = 7 * DAY_S
_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Mobile Safari/537.36",
)
_NAMES = ("amara", "bruno", "chen", "dalia", "emeka", "farah", "goran", "hana", "ivan", "jia", "kofi", "lucia",
          "mateo", "nadia", "omar", "priya", "quinn", "rosa", "sami", "tomas", "uma", "viktor", "wen", "yara")
# Hour of day (UTC) a session starts: a weight per hour, afternoons and evenings first.
_HOURS = numpy.array([1, 1, 1, 1, 1, 2, 3, 4, 5, 6, 6, 6, 7, 7, 6, 6, 7, 8, 9, 10, 10, 8, 5, 2], dtype=float)
_HOUR_CDF = numpy.cumsum(_HOURS / _HOURS.sum())


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class _Draws:
    """Uniform numbers drawn from a numpy generator in blocks (one call per block, not per number)."""

    def __init__(self, rng: numpy.random.Generator, block: int = 512):
        self.rng, self._block = rng, block
        self._values, self._next = rng.random(block), 0

    def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        if self._next == self._block:
            self._values, self._next = self.rng.random(self._block), 0
        value = self._values[self._next]
        self._next += 1
        return low + (high - low) * float(value)

    def exponential(self, mean: float) -> float:
        return -mean * math.log(1.0 - self.uniform())

    def chance(self, p: float) -> bool:
        return self.uniform() < p

    def index(self, n: int) -> int:
        return min(int(self.uniform() * n), n - 1)


@dataclass
class Demo:
    """A generated stream and its truth.

    :param course: the simulated course.
    :param events: the events, in time order (dicts in the tracking-log shape).
    :param truth: the ground-truth document.
    """

    course: Course
    events: list
    truth: dict


class _Learner:
    """One learner's simulation; :meth:`run` appends ``(time, event)`` pairs to :attr:`events`."""

    def __init__(self, index: int, rng: numpy.random.Generator, course: Course, start: float, truth: Truth):
        self.draws = _Draws(rng)
        self.course, self.start, self.truth = course, start, truth
        self.username = f"{_NAMES[index % len(_NAMES)]}_{index:05d}"
        self.user_id = 1000 + index
        self.theta, noise = (float(x) for x in rng.standard_normal(2))
        self.engagement = 0.3 * self.theta + math.sqrt(1 - 0.3 ** 2) * noise
        self.ip = "10.{}.{}.{}".format(*(int(x) for x in rng.integers(1, 255, 3)))
        self.agent = _AGENTS[self.draws.index(len(_AGENTS))]
        self.units = [(seq, tab, unit) for seq in course.sequentials for tab, unit in enumerate(seq.units, 1)]
        self.pointer = 0
        self.resume: dict[str, float] = {}
        self.events: list[tuple[float, dict]] = []
        self.client: Client | None = None
        self.clock = 0.0

    # -- emitting ------------------------------------------------------------------

    def _emit(self, event: dict) -> None:
        self.events.append((self.clock, event))

    def _tick(self, seconds: float) -> None:
        # At least a millisecond between two events of a learner: times (and so identities) never repeat.
        self.clock += max(seconds, 0.001)

    # -- the plan -------------------------------------------------------------------

    def run(self) -> None:
        d = self.draws
        end = self.start + self.course.weeks * WEEK_S
        enrolled_at = min(self.start - 3 * DAY_S + d.exponential(5 * DAY_S), end - 2 * DAY_S)
        first_week = max(0, int((enrolled_at - self.start) // WEEK_S))
        self.clock = enrolled_at
        self.client = Client(self.course, self.username, self.user_id, self.ip, self.agent, self._session_key())
        self._emit(self.client.enrollment(self.clock, "audit" if d.chance(0.8) else "verified"))
        last_week, sessions = None, 0
        if d.chance(0.92):  # the other 8% never come back after enrolling
            last_week = first_week
            while last_week + 1 < self.course.weeks and d.chance(_sigmoid(1.5 + 0.8 * self.engagement)):
                last_week += 1
            for week in range(first_week, last_week + 1):
                for when in self._session_times(week, enrolled_at):
                    self._session(max(when, self.clock + 600.0))
                    sessions += 1
        self.truth.learner(self.username, user_id=self.user_id, theta=self.theta, engagement=self.engagement,
                           enrolled_at=iso_time(enrolled_at), last_week=last_week, sessions=sessions)

    def _session_key(self) -> str:
        return "".join(f"{int(x):08x}" for x in self.draws.rng.integers(0, 2**32, 4))

    def _session_times(self, week: int, not_before: float) -> list[float]:
        count = 1 + int(self.draws.rng.poisson(math.exp(0.4 + 0.35 * self.engagement)))
        times = []
        for _ in range(count):
            hour = int(numpy.searchsorted(_HOUR_CDF, self.draws.uniform()))
            times.append(self.start + week * WEEK_S + self.draws.index(7) * DAY_S
                         + (hour + self.draws.uniform()) * 3600.0)
        return sorted(t for t in times if t > not_before + 60.0)

    def _released(self, when: float) -> int:
        """:returns: how many units (from the start of the list) are released at ``when``."""
        week = int((when - self.start) // WEEK_S)
        return sum(1 for seq, _, unit in self.units if unit.week <= week)

    def _session(self, when: float) -> None:
        d = self.draws
        self.clock = when
        self.client = Client(self.course, self.username, self.user_id, self.ip, self.agent, self._session_key())
        released = self._released(when)
        where: tuple[Sequential, int] | None = None
        for _ in range(2 + int(d.rng.poisson(3.5))):
            if self.pointer < released:
                seq, tab, unit = self.units[self.pointer]
                self.pointer += 1
            else:
                videos = [u for u in self.units[:released] if isinstance(u[2], Video)]
                if not videos or not d.chance(0.3):  # caught up: now and then, watch a video again
                    break
                seq, tab, unit = videos[d.index(len(videos))]
            if where is not None and where[0] is seq and where[1] + 1 == tab:
                self._emit(self.client.seq_next(self.clock, seq, where[1]))
            else:
                self._emit(self.client.page_view(self.clock, seq))
            where = (seq, tab)
            self._tick(d.uniform(1.0, 4.0))
            if isinstance(unit, Video):
                self._watch(unit)
            else:
                self._answer(unit)
            self._tick(2.0 + d.exponential(15.0))
        self._emit(self.client.page_close(self.clock))

    # -- units -----------------------------------------------------------------------

    def _watch(self, video: Video) -> None:
        d, client = self.draws, self.client
        if d.chance(min(0.5, max(0.03, 0.12 - 0.05 * self.engagement))):
            return  # looked at the page, did not play
        self._emit(client.video("load_video", self.clock, video))
        self._tick(d.uniform(1.0, 3.0))
        position = self.resume.get(video.block, 0.0)
        if position > video.duration - 5:
            position = 0.0
        self._emit(client.video("play_video", self.clock, video, currentTime=position))
        mean_stretch = 90.0 * math.exp(0.3 * self.engagement)
        for _ in range(40):
            stretch = min(3.0 + d.exponential(mean_stretch), video.duration - position)
            end = round(position + stretch, 3)
            self.clock += end - position
            self.truth.viewing(self.username, video, position, end)
            if end >= video.duration:
                self._emit(client.video("stop_video", self.clock, video, currentTime=end))
                self.resume.pop(video.block, None)
                return
            action = d.uniform()
            if action < 0.45:
                self._emit(client.video("pause_video", self.clock, video, currentTime=end))
                if not d.chance(0.7):
                    self.resume[video.block] = end
                    return
                self._tick(1.0 + d.exponential(25.0))
                self._emit(client.video("play_video", self.clock, video, currentTime=end))
                position = end
            elif action < 0.8:
                jump = d.uniform(10.0, 90.0) if d.chance(0.6) else -d.uniform(5.0, 60.0)
                target = round(min(max(end + jump, 0.0), video.duration - 2.0), 3)
                self._emit(client.video("seek_video", self.clock, video, old_time=end, new_time=target))
                self._tick(d.uniform(0.3, 1.5))
                self._emit(client.video("play_video", self.clock, video, currentTime=target))
                position = target
            else:
                self._emit(client.video("pause_video", self.clock, video, currentTime=end))
                self.resume[video.block] = end
                return
        self._emit(client.video("pause_video", self.clock, video, currentTime=position))
        self.resume[video.block] = position

    def _answer(self, problem: Problem) -> None:
        d, client = self.draws, self.client
        self._tick(15.0 + d.exponential(45.0))
        for attempt in range(1, problem.max_attempts + 1):
            p = _sigmoid(problem.a * (self.theta + 0.5 * (attempt - 1) - problem.b))
            right = d.chance(p)
            parts = [True] * problem.parts
            if not right:  # at least one part wrong; the others right as often as the item is
                parts = [d.chance(p) for _ in range(problem.parts)]
                parts[d.index(problem.parts)] = False
            choices = [0 if ok else 1 + d.index(3) for ok in parts]
            self._emit(client.problem_check_browser(self.clock, problem, choices))
            self._tick(d.uniform(0.05, 0.4))
            self._emit(client.problem_check_server(self.clock, problem, attempt, parts, choices))
            self.truth.submission(self.username, problem, attempt, parts, choices, self.clock)
            if right or not d.chance(_sigmoid(0.8 + 0.5 * self.engagement)):
                return
            self._tick(8.0 + d.exponential(40.0))


def _epoch(day: str) -> float:
    return datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp()


def generate(seed: int = 0, learners: int = 300, weeks: int = 6, start: str = DEFAULT_START,
             course_id: str = DEFAULT_COURSE_ID) -> Demo:
    """Simulate a course.

    :param seed: the seed; the same arguments always give the same stream and truth.
    :param learners: how many learners enrol.
    :param weeks: how long the course runs (one chapter a week).
    :param start: the first day of the course (``YYYY-MM-DD``, UTC); learners enrol from three days before.
    :param course_id: the course's id, ``course-v1:ORG+NUMBER+RUN``.
    :returns: the events in time order and the truth.
    :raises ValueError: ``learners`` or ``weeks`` is below 1, or ``start`` is not a date.
    """
    if learners < 1 or weeks < 1:
        raise ValueError("learners and weeks must be at least 1")
    course_seed, *learner_seeds = numpy.random.SeedSequence(seed).spawn(learners + 1)
    course = build_course(numpy.random.default_rng(course_seed), weeks, course_id)
    settings = {"seed": seed, "learners": learners, "weeks": weeks, "start": start, "course_id": course_id}
    truth = Truth(course, settings)
    timed = []
    for index, learner_seed in enumerate(learner_seeds):
        learner = _Learner(index, numpy.random.default_rng(learner_seed), course, _epoch(start), truth)
        learner.run()
        timed.extend((when, index, n, event) for n, (when, event) in enumerate(learner.events))
    timed.sort()  # (time, learner, n) is unique, so the event dicts themselves are never compared
    events = [item[3] for item in timed]
    for event in events:
        truth.event(event)
    return Demo(course, events, truth.as_dict())
