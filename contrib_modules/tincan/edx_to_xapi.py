"""Open edX events → xAPI statements, following Open edX's own transformer (event-routing-backends).

Pure functions, standard library only: :class:`XapiTransformer` turns an edX
event (read by :class:`~.edx_events.EdxEvent`) into statements; :data:`MAPPING`
says which event types are mapped and whose mapping each follows.
``properties.py`` wraps it as ``evt.tincan.*``; the module's queries and the
tests use it directly.
"""
from __future__ import annotations

import json
import re
import uuid
from urllib.parse import parse_qs, urlsplit

from .edx_events import EdxEvent, as_dict, block_key, parse_payload, utc_timestamp
from .vocabulary import INTERACTION_TYPES, XAPI_VERSION, Activity, Ext, Verb

__all__ = ["XAPI_VERSION", "Verb", "Activity", "MAPPING", "SERVER_PAGE_VIEW", "EdxEvent", "XapiTransformer",
           "parse_payload", "block_key", "utc_timestamp", "mapping_table"]

_ID_NAMESPACE = uuid.UUID("6f1a3f2e-53c4-5b1e-9a55-1e2f3c4d5e6f")


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _seconds(value):
    """A video position, rounded to the millisecond as Open edX does."""
    value = _number(value)
    return None if value is None else round(float(value), 3)


def _iso_duration(seconds) -> str | None:
    """A length in seconds as an ISO 8601 duration (``PT03M15S``)."""
    seconds = _number(seconds)
    if seconds is None:
        return None
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"PT{hours}H{minutes:02d}M{secs:02d}S" if hours else f"PT{minutes:02d}M{secs:02d}S"


def _score(raw, maximum):
    """An xAPI score, ``scaled`` being 0 when nothing could be earned (as Open edX)."""
    score = {"min": 0, "max": _number(maximum), "raw": _number(raw)}
    if score["max"] is not None and score["raw"] is not None:
        score["scaled"] = score["raw"] / score["max"] if score["max"] else 0
    return score


def _activity(activity_id, kind, **definition):
    found = {"objectType": "Activity", "definition": {"type": kind, **definition}}
    if activity_id:
        found["id"] = activity_id
    return found


def _clean(value):
    """Drop None / empty values recursively (as Open edX does before sending)."""
    if isinstance(value, dict):
        kept = {}
        for key, item in value.items():  # one pass: this runs for every event a filter reads
            item = _clean(item)
            if item is not None and item != {} and item != [] and item != "":
                kept[key] = item
        return kept
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


class Ids:
    """Activity ids on one LMS (``<root>/xblock/<usage key>``, ``<root>/course/<course key>``...).

    :param root: the LMS root URL, without a trailing slash.
    """

    def __init__(self, root: str):
        self.root = root

    def url(self, path: str) -> str:
        """:returns: ``<root>/<path>``."""
        return f"{self.root}/{path}"

    def xblock(self, usage_key) -> str | None:
        """:returns: the activity id of a block (None without a usage key)."""
        return self.url(f"xblock/{usage_key}") if usage_key else None

    def course_url(self, e) -> str | None:
        """:returns: the activity id of the event's course, or None."""
        return self.url(f"course/{e.course_id}") if e.course_id else None

    def course(self, e) -> list:
        """:returns: the course as a context activity (a list of 0 or 1)."""
        course = self.course_url(e)
        return [_activity(course, Activity.COURSE)] if course else []


# -- the mapping: one builder per family of event types -----------------------
# A builder gets (Ids, EdxEvent) and returns the statements' variable
# parts: dicts with verb, object and optionally result, parent, grouping,
# extensions, part_of_first (a part of a multi-part problem).

_VIDEO = {
    "load_video": Verb.INITIALIZED, "edx.video.loaded": Verb.INITIALIZED,
    "play_video": Verb.PLAYED, "edx.video.played": Verb.PLAYED,
    "pause_video": Verb.PAUSED, "edx.video.paused": Verb.PAUSED,
    "stop_video": Verb.TERMINATED, "edx.video.stopped": Verb.TERMINATED,
    "seek_video": Verb.SEEKED, "edx.video.position.changed": Verb.SEEKED,
    "complete_video": Verb.COMPLETED, "edx.video.completed": Verb.COMPLETED,
    "speed_change_video": Verb.INTERACTED,
}
_CAPTIONS = {  # interacted, with cc-enabled true (shown) or false (hidden)
    "show_transcript": True, "edx.video.transcript.shown": True,
    "hide_transcript": False, "edx.video.transcript.hidden": False,
    "edx.video.closed_captions.shown": True, "edx.video.closed_captions.hidden": False,
    "video_show_cc_menu": True, "video_hide_cc_menu": False,
}


def _video(ids, e):
    verb = _VIDEO.get(e.name, Verb.INTERACTED)
    data = e.fields
    result, ext = {}, {}
    if _number(data.get("duration")) is not None:
        ext[Ext.VIDEO + "length"] = float(data["duration"])
    position = data.get("currentTime", data.get("current_time"))
    if verb in (Verb.PLAYED, Verb.PAUSED, Verb.TERMINATED):
        result[Ext.VIDEO + "time"] = _seconds(position)
    elif verb == Verb.SEEKED:
        result[Ext.VIDEO + "time-from"] = _seconds(data.get("old_time", position))
        result[Ext.VIDEO + "time-to"] = _seconds(data.get("new_time"))
    elif e.name in _CAPTIONS:
        result[Ext.VIDEO + "time"] = _seconds(position)
        result[Ext.VIDEO + "cc-enabled"] = _CAPTIONS[e.name]
    elif e.name == "speed_change_video":
        result[Ext.SPEED + "from"] = f"{data['old_speed']}x" if data.get("old_speed") else None
        result[Ext.SPEED + "to"] = f"{data['new_speed']}x" if data.get("new_speed") else None
    full = {"extensions": result}
    if verb == Verb.COMPLETED:
        full = {"extensions": {Ext.VIDEO + "time": _seconds(data.get("duration"))},
                "completion": True, "duration": _iso_duration(data.get("duration"))}
    video = data.get("id")
    object_id = ids.xblock(block_key(e.course_id, "video", str(video))) if video else None
    return [{"verb": verb, "object": _activity(object_id, Activity.VIDEO), "result": full,
             "parent": ids.course(e), "extensions": ext}]


_PROBLEM_INPUT = re.compile(r"input_(?:i4x-[^-]+-[^-]+-problem-)?(\w+?)_\d+_\d+")


def _browser_problem_id(e):
    """The problem a browser ``problem_check`` was about: the referrer's
    ``activate_block_id`` (old courseware), else the block named in the answers."""
    referer = e.get("referer")
    referer = referer if isinstance(referer, str) else ""
    query = parse_qs(urlsplit(referer).query)
    if query.get("activate_block_id"):
        return query["activate_block_id"][0]
    match = _PROBLEM_INPUT.search(e.data) if isinstance(e.data, str) else None
    if match:
        return block_key(e.course_id, "problem", match.group(1))
    path = urlsplit(referer).path
    return path.split("/xblock/", 1)[1] if "/xblock/" in path else None


def _response(answer):
    if isinstance(answer, list):
        return json.dumps(answer, ensure_ascii=False)
    return None if answer is None else str(answer)


def _problem_check(ids, e):
    data = e.fields
    if e.get("event_source") == "browser":
        problem = _browser_problem_id(e)
        return [{"verb": Verb.ATTEMPTED, "parent": ids.course(e),
                 "object": _activity(ids.xblock(problem), Activity.INTERACTION)}]
    problem = _problem_of(data)
    object_id = ids.xblock(problem)
    submission = as_dict(data.get("submission"))
    score = _score(data.get("grade"), data.get("max_grade"))
    success = data.get("success") == "correct"
    if len(submission) <= 1:
        part = next(iter(submission.values()), None)
        part = as_dict(part)
        kind = INTERACTION_TYPES.get(part.get("response_type"), "other")
        # Without a response type Open edX sends the raw answers map, as Python prints it.
        response = _response(part.get("answer")) if part.get("response_type") else (
            str(data["answers"]) if data.get("answers") else None)
        return [{"verb": Verb.EVALUATED, "parent": ids.course(e),
                 "object": _activity(object_id, Activity.INTERACTION, interactionType=kind),
                 "result": {"score": score, "success": success, "response": response}}]
    group = _activity(object_id, Activity.INTERACTION, interactionType="other")
    group["objectType"] = "GroupActivity"
    statements = [{"verb": Verb.EVALUATED, "object": group, "parent": ids.course(e),
                   "result": {"score": score, "success": success}}]
    for key, part in submission.items():
        part = as_dict(part)
        part_id = f"{problem.rsplit('@', 1)[0]}@{key}" if problem else None
        kind = INTERACTION_TYPES.get(part.get("response_type"), "other")
        description = {"en-US": part["question"]} if part.get("question") else None
        statements.append({
            "verb": Verb.EVALUATED, "part_of_first": True, "parent": [group], "grouping": ids.course(e),
            "object": _activity(ids.xblock(part_id), Activity.INTERACTION,
                                interactionType=kind, description=description),
            "result": {"response": _response(part.get("answer")), "success": part.get("correct")}})
    return statements


def _problem_of(data) -> str | None:
    problem = data.get("problem_id") or data.get("module_id")
    return problem if isinstance(problem, str) else None


def _problem(ids, e):
    data = e.fields
    problem = _problem_of(data)
    if e.name == "showanswer":
        target = _activity(ids.xblock(f"{problem}/answer" if problem else None), Activity.SOLUTION)
        verb, result = Verb.ASKED, None
    elif e.name == "edx.problem.hint.demandhint_displayed":
        hint = f"{problem}/hint/{data.get('hint_index')}" if problem else None
        target, verb, result = _activity(ids.xblock(hint), Activity.HINT), Verb.ASKED, None
    elif e.name == "edx.problem.completed":  # Open edX sends the bare usage key here
        target, verb, result = _activity(problem, Activity.INTERACTION), Verb.COMPLETED, None
    else:  # edx.grades.problem.submitted
        earned, possible = _number(data.get("weighted_earned")), _number(data.get("weighted_possible"))
        success = earned >= possible if earned is not None and possible is not None else None
        result = {"score": _score(earned, possible), "success": success}
        target, verb = _activity(ids.xblock(problem), Activity.QUESTION), Verb.ATTEMPTED
    return [{"verb": verb, "object": target, "result": result, "parent": ids.course(e)}]


_NAVIGATION_END = {"edx.ui.lms.sequence.next_selected": "next unit",
                   "edx.ui.lms.sequence.previous_selected": "previous unit"}


def _navigation(ids, e):
    data = e.fields
    if e.name == "edx.ui.lms.link_clicked":
        target = _activity(data.get("target_url"), Activity.LINK)
        return [{"verb": Verb.NAVIGATED, "object": target, "parent": ids.course(e)}]
    if e.name == "edx.ui.lms.outline.selected":
        name = {"en": data["target_name"]} if data.get("target_name") else None
        target = _activity(data.get("target_url"), Activity.MODULE, name=name)
        return [{"verb": Verb.NAVIGATED, "object": target, "parent": ids.course(e)}]
    target = _activity(ids.xblock(data["id"]) if data.get("id") else None, Activity.RESOURCE,
                       extensions={Ext.TOTAL_ITEMS: data.get("tab_count")})
    end = _NAVIGATION_END.get(e.name, data.get("target_tab"))
    return [{"verb": Verb.NAVIGATED, "object": target, "parent": ids.course(e),
             "extensions": {Ext.START: data.get("current_tab"), Ext.END: end}}]


_COURSE_VERBS = {
    "edx.course.enrollment.activated": Verb.REGISTERED, "edx.course.enrollment.mode_changed": Verb.REGISTERED,
    "edx.course.enrollment.deactivated": Verb.UNREGISTERED,
    "edx.course.grade.passed.first_time": Verb.PASSED, "edx.course.grade.now_passed": Verb.PASSED,
    "edx.course.grade.now_failed": Verb.FAILED,
}


def _course_status(ids, e):
    mode = e.fields.get("mode")
    target = _activity(ids.course_url(e), Activity.COURSE, extensions={Ext.MODE: mode})
    return [{"verb": _COURSE_VERBS[e.name], "object": target}]


def _grades(ids, e):
    data = e.fields
    if e.name == "edx.grades.course.grade_calculated":
        percent = _number(data.get("percent_grade"))
        result = {"score": {"scaled": percent, "raw": percent, "min": 0.0, "max": 1.0},
                  "extensions": {Ext.GRADE: data.get("letter_grade") or "Fail"}}
        return [{"verb": Verb.EARNED, "object": _activity(ids.course_url(e), Activity.COURSE),
                 "result": result, "parent": ids.course(e)}]
    earned, possible = _number(data.get("weighted_total_earned")), _number(data.get("weighted_total_possible"))
    success = earned >= possible if earned is not None and possible is not None else None
    block = data.get("block_id")
    return [{"verb": Verb.EARNED, "object": _activity(ids.xblock(block), Activity.RESOURCE),
             "result": {"score": _score(earned, possible), "success": success}, "parent": ids.course(e)}]


def _completion(ids, e):
    data = e.fields
    completion = _number(data.get("completion"))
    block = data.get("block_id")
    result = {"completion": completion == 1.0,
              "extensions": {Ext.PROGRESS: None if completion is None else completion * 100}}
    return [{"verb": Verb.PROGRESSED, "object": _activity(ids.xblock(block), Activity.RESOURCE),
             "result": result, "parent": ids.course(e)}]


_FORUM_VERBS = {"created": Verb.POSTED, "deleted": Verb.DELETED, "edited": Verb.EDITED,
                "reported": Verb.REPORTED, "unreported": Verb.UNREPORTED, "voted": Verb.VOTED,
                "viewed": Verb.VIEWED}


def _forum(ids, e):
    _, _, kind, action = e.name.split(".")
    data = e.fields
    # Open edX files thread views under comments/ too.
    collection = "threads" if kind == "thread" and action != "viewed" else "comments"
    name = {"en": data["title"]} if data.get("title") else None
    target = _activity(ids.url(f"api/discussion/v1/{collection}/{data['id']}") if data.get("id") else None,
                       Activity.DISCUSSION, name=name)
    thread = as_dict(data.get("discussion")).get("id")
    grouping = [_activity(ids.url(f"api/discussion/v1/threads/{thread}"), Activity.DISCUSSION)] \
        if thread and action == "created" else []
    return [{"verb": _FORUM_VERBS[action], "object": target, "parent": ids.course(e), "grouping": grouping}]


def _exam(ids, e):
    _, _, kind, _, action = e.name.split(".")
    data = e.fields
    name = {"en": data["exam_name"]} if data.get("exam_name") else None
    target = _activity(data.get("exam_content_id"), Activity.ASSESSMENT.format(kind=kind), name=name,
                       extensions={Ext.TIME_LIMIT: data.get("exam_default_time_limit_mins")})
    attempt = data.get("attempt_code")
    grouping = [_activity(attempt, Activity.ATTEMPT, name=name,
                          extensions={Ext.ATTEMPT_ID: data.get("attempt_id")})] if attempt else []
    verb = Verb.INITIALIZED if action == "created" else Verb.TERMINATED
    return [{"verb": verb, "object": target, "parent": ids.course(e), "grouping": grouping}]


def _page_close(ids, e):
    return [{"verb": Verb.TERMINATED, "object": _activity(e.get("page"), Activity.PAGE)}]


def _page_view(ids, e):
    return [{"verb": Verb.VIEWED, "object": _activity(ids.url(e.name.lstrip("/")), Activity.PAGE)}]


def _family(builder, names, follows="Open edX"):
    return {name: (builder, follows) for name in names}


#: edX event type → (builder, whose mapping it follows). Server page views (an
#: ``event_type`` that is a URL path) are mapped too, by :meth:`XapiTransformer.builder_of`.
MAPPING = {
    **_family(_video, [*_VIDEO, *_CAPTIONS]),
    "problem_check": (_problem_check, "Open edX"),
    **_family(_problem, ["showanswer", "edx.problem.hint.demandhint_displayed", "edx.problem.completed",
                         "edx.grades.problem.submitted"]),
    **_family(_navigation, ["edx.ui.lms.link_clicked", "edx.ui.lms.outline.selected",
                            "edx.ui.lms.sequence.next_selected", "edx.ui.lms.sequence.previous_selected",
                            "edx.ui.lms.sequence.tab_selected"]),
    **_family(_course_status, _COURSE_VERBS),
    **_family(_grades, ["edx.grades.course.grade_calculated", "edx.grades.subsection.grade_calculated"]),
    "edx.completion.block_completion.changed": (_completion, "Open edX"),
    **_family(_forum, [f"edx.forum.{kind}.{action}" for kind in ("thread", "response", "comment")
                       for action in ("created", "deleted", "edited", "reported", "unreported")]
              + ["edx.forum.thread.voted", "edx.forum.response.voted", "edx.forum.thread.viewed"]),
    **_family(_exam, [f"edx.special_exam.{kind}.attempt.{action}" for kind in ("practice", "proctored", "timed")
                      for action in ("created", "submitted")]),
    "page_close": (_page_close, "Ralph"),
}
SERVER_PAGE_VIEW = "(server page view: event_type is the URL path)"


# -- the transformer ------------------------------------------------------------

class XapiTransformer:
    """Turns edX events into xAPI statements.

    :param lms_root_url: base of activity ids and of the actor's ``homePage``
        (default: ``https://<the event's host>``).
    :param actor_names: username or user id → account name; ``"*"`` for anyone not listed.
    :param actor_name: ``f(edx_event) -> str | None`` computing the account name
        (overrides ``actor_names``); None falls back to the default rule.
    """

    def __init__(self, lms_root_url: str | None = None, actor_names: dict | None = None, actor_name=None):
        self.lms_root_url = lms_root_url.rstrip("/") if lms_root_url else None
        self.actor_names = {str(k): str(v) for k, v in (actor_names or {}).items()}
        self.actor_name = actor_name

    def root_of(self, e) -> str:
        """The LMS root URL for an event: the configured one, else ``https://<host>``."""
        if self.lms_root_url:
            return self.lms_root_url
        host = e.get("host")
        return f"https://{host}" if isinstance(host, str) else "https://unknown-lms.invalid"

    # actor ------------------------------------------------------------------
    def account_name(self, e) -> str:
        """The actor's account name (see the class parameters)."""
        if self.actor_name is not None:
            name = self.actor_name(e)
            if name:
                return str(name)
        username, user_id = e.username, e.user_id
        for key in (username, user_id, "*"):
            if key is not None and str(key) in self.actor_names:
                return self.actor_names[str(key)]
        return str(username or user_id or "anonymous")

    def actor(self, raw) -> dict:
        """:returns: the xAPI agent of an edX event (mapped or not)."""
        e = raw if isinstance(raw, EdxEvent) else EdxEvent(raw, prefer=MAPPING)
        return {"objectType": "Agent", "account": {"homePage": self.root_of(e), "name": self.account_name(e)}}

    # statements -------------------------------------------------------------
    @staticmethod
    def builder_of(e):
        """:returns: the builder for an event, or None when its type is not mapped."""
        if e.name in MAPPING:
            return MAPPING[e.name][0]
        if isinstance(e.name, str) and e.name.startswith("/") and e.get("event_source") == "server":
            return _page_view
        return None

    def statements(self, raw) -> list[dict]:
        """:returns: the statements of an edX event ([] when its type is not mapped)."""
        e = EdxEvent(raw, prefer=MAPPING)
        builder = self.builder_of(e)
        if builder is None:
            return []
        actor = self.actor(e)
        out = []
        for index, part in enumerate(builder(Ids(self.root_of(e)), e)):
            context = {"contextActivities": {"parent": part.get("parent"), "grouping": part.get("grouping")},
                       "extensions": {Ext.SESSION: e.get("session"), **(part.get("extensions") or {})}}
            if part.get("part_of_first") and out:
                context["statement"] = {"objectType": "StatementRef", "id": out[0]["id"]}
            statement = {"actor": actor, "verb": {"id": part["verb"], "display": {"en": part["verb"].rsplit("/", 1)[1]}},
                         "object": part["object"], "result": part.get("result"), "context": context,
                         "timestamp": e.timestamp, "version": XAPI_VERSION}
            statement = _clean(statement)
            seed = json.dumps([actor["account"]["name"], e.timestamp, part["verb"],
                               part["object"].get("id"), index])
            out.append({"id": str(uuid.uuid5(_ID_NAMESPACE, seed)), **statement})
        return out


def mapping_table() -> list[dict]:
    """:returns: ``[{"event_type", "verb", "follows"}]``: every edX type tincan maps."""
    sample = XapiTransformer(lms_root_url="https://lms.example")
    rows = []
    for name, (builder, follows) in sorted(MAPPING.items()):
        statements = sample.statements({"name": name, "timestamp": "", "data": {},
                                        "context": {"event_source": "server"}})
        rows.append({"event_type": name, "verb": statements[0]["verb"]["id"], "follows": follows})
    rows.append({"event_type": SERVER_PAGE_VIEW, "verb": Verb.VIEWED, "follows": "Ralph"})
    return rows
