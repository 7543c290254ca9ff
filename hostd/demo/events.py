"""Open edX tracking-log events, in the shapes the LMS writes them.

Browser events (``event_source: "browser"``, video and navigation) carry their
payload as a JSON-encoded string in ``event`` and the page in ``page``; server
events (page views, enrollments, ``problem_check``) carry a dict, or for page
views the request's ``{"POST": {}, "GET": {}}`` as a string. Every event has
``username``, ``event_type``, ``name``, ``time`` (ISO 8601, UTC), ``ip``,
``agent``, ``host``, ``session``, ``referer``, ``accept_language`` and a
``context`` with ``course_id``, ``org_id``, ``user_id`` and ``path``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from .course import Course, Problem, Sequential, Video

__all__ = ["HOST", "Client", "iso_time"]

HOST = "courses.example.org"
_EMPTY_REQUEST = json.dumps({"POST": {}, "GET": {}})


def iso_time(epoch_s: float) -> str:
    """:returns: ``epoch_s`` as the LMS writes ``time``: ``2026-01-05T09:00:00.000123+00:00``."""
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat(timespec="microseconds")


@dataclass
class Client:
    """One learner's browser session: what every event of that session shares.

    :param course: the course.
    :param username: the learner's user name.
    :param user_id: the learner's numeric id.
    :param ip: the address the learner connects from.
    :param agent: the browser's user agent.
    :param session: the session key (32 hex digits).
    :param page: the URL of the page the learner is on (browser events' ``page``, the
        next request's ``referer``); a page view sets it.
    """

    course: Course
    username: str
    user_id: int
    ip: str
    agent: str
    session: str
    page: str | None = None

    def page_url(self, sequential: Sequential) -> str:
        """:returns: the full URL of a subsection's page."""
        return f"https://{HOST}{sequential.path(self.course.course_id)}"

    def _base(self, event_type: str, when: float, source: str, path: str, payload) -> dict:
        return {
            "username": self.username, "event_type": event_type, "name": event_type,
            "ip": self.ip, "agent": self.agent, "host": HOST, "session": self.session,
            "referer": self.page or f"https://{HOST}/dashboard", "accept_language": "en-US,en;q=0.9",
            "event": payload, "event_source": source,
            "context": {"course_user_tags": {}, "user_id": self.user_id, "org_id": self.course.org_id,
                        "course_id": self.course.course_id, "path": path} if source == "server" else
                       {"user_id": self.user_id, "org_id": self.course.org_id,
                        "course_id": self.course.course_id, "path": "/event"},
            "time": iso_time(when), "page": self.page if source == "browser" else None,
        }

    # -- server events ---------------------------------------------------------

    def enrollment(self, when: float, mode: str) -> dict:
        """``edx.course.enrollment.activated``, as ``/change_enrollment`` logs it."""
        payload = {"course_id": self.course.course_id, "user_id": self.user_id, "mode": mode}
        return self._base("edx.course.enrollment.activated", when, "server", "/change_enrollment", payload)

    def page_view(self, when: float, sequential: Sequential) -> dict:
        """A server page view of a subsection (``event_type`` is the path); the page becomes current."""
        path = sequential.path(self.course.course_id)
        event = self._base(path, when, "server", path, _EMPTY_REQUEST)
        self.page = self.page_url(sequential)
        return event

    def problem_check_server(self, when: float, problem: Problem, attempt: int, parts: list[bool],
                             choices: list[int]) -> dict:
        """The server's ``problem_check``: grade, attempts, correctness and answers of one submission.

        :param attempt: the submission's number for this learner (from 1).
        :param parts: whether each part was answered correctly.
        :param choices: the choice index picked in each part (choice 0 is the right one).
        """
        answer_ids = problem.answer_ids()
        answers = {aid: f"choice_{choice}" for aid, choice in zip(answer_ids, choices)}
        correct_map = {aid: {"correctness": "correct" if ok else "incorrect", "npoints": None, "msg": "",
                             "hint": "", "hintmode": None, "queuestate": None, "answervariable": None}
                       for aid, ok in zip(answer_ids, parts)}
        submission = {aid: {"question": problem.question(n),
                            "answer": problem.answer_text(choice), "response_type": "multiplechoiceresponse",
                            "input_type": "choicegroup", "correct": ok, "variant": "", "group_label": ""}
                      for n, (aid, ok, choice) in enumerate(zip(answer_ids, parts, choices))}
        grade = sum(parts)
        payload = {
            "state": {"seed": 1, "student_answers": {}, "has_saved_answers": False, "correct_map": {},
                      "input_state": {aid: {} for aid in answer_ids}, "done": attempt > 1 or None},
            "problem_id": problem.usage_key, "answers": answers, "grade": grade, "max_grade": problem.parts,
            "correct_map": correct_map, "success": "correct" if grade == problem.parts else "incorrect",
            "attempts": attempt, "submission": submission,
        }
        path = f"/courses/{self.course.course_id}/xblock/{problem.usage_key}/handler/xmodule_handler/problem_check"
        event = self._base("problem_check", when, "server", path, payload)
        event["context"]["module"] = {"display_name": problem.display_name, "usage_key": problem.usage_key}
        event["context"]["asides"] = {}
        event["page"] = "x_module"
        return event

    # -- browser events ----------------------------------------------------------

    def _browser(self, event_type: str, when: float, payload: dict | str) -> dict:
        return self._base(event_type, when, "browser", "/event",
                          payload if isinstance(payload, str) else json.dumps(payload))

    def problem_check_browser(self, when: float, problem: Problem, choices: list[int]) -> dict:
        """The browser's ``problem_check``: the form as a query string."""
        form = "&".join(f"input_{aid}=choice_{choice}" for aid, choice in zip(problem.answer_ids(), choices))
        return self._browser("problem_check", when, form)

    def video(self, event_type: str, when: float, video: Video, **positions) -> dict:
        """A video event: ``load_video``, ``play_video``, ``pause_video``, ``stop_video`` (with
        ``currentTime``) or ``seek_video`` (with ``old_time``, ``new_time``)."""
        payload = {"id": video.block, "code": video.code, "duration": video.duration}
        payload.update({k: round(v, 3) for k, v in positions.items()})
        if event_type == "seek_video":
            payload["type"] = "onSlideSeek"
        return self._browser(event_type, when, payload)

    def seq_next(self, when: float, sequential: Sequential, tab: int) -> dict:
        """``seq_next``: from tab ``tab`` to the next one (tabs numbered from 1)."""
        return self._browser("seq_next", when, {"old": tab, "new": tab + 1, "current_tab": tab,
                                                "tab_count": len(sequential.units), "id": sequential.usage_key,
                                                "widget_placement": "top"})

    def page_close(self, when: float) -> dict:
        """``page_close``: the learner leaves the page."""
        return self._browser("page_close", when, "{}")
