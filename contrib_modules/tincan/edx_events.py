"""Reading Open edX events: the tracking-log line and the in-process event alike.

A tracking-log line has ``event_type``, ``time``, ``event`` (which browser
events carry as a JSON-encoded string) and the user, session and host at the
top level; the in-process event event-routing-backends sees has ``name``,
``timestamp``, ``data`` and all of that in ``context``. :class:`EdxEvent` reads
both the same way.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone

__all__ = ["EdxEvent", "parse_payload", "utc_timestamp", "block_key", "as_dict"]


def parse_payload(value):
    """:returns: an event payload, JSON-decoded when it is a JSON string (browser events)."""
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except ValueError:
            return value  # a query string (problem_check) or a truncated payload
    return value


def utc_timestamp(value):
    """:returns: an ISO 8601 time in UTC with an explicit ``+00:00`` (as Open edX sends it);
    a time without zone is taken as UTC; anything unreadable is returned unchanged."""
    if not isinstance(value, str):
        return value
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    return moment.isoformat()


def as_dict(value) -> dict:
    """:returns: ``value`` if it is a dict, else an empty one."""
    return value if isinstance(value, dict) else {}


class EdxEvent:
    """One edX event, read the same way in the tracking-log and the in-process form.

    :param raw: the event dict.
    :param prefer: event types to prefer as :attr:`name` when ``name`` and ``event_type``
        differ (a browser event may say ``event_type="play_video"``, ``name="edx.video.played"``).
    """

    def __init__(self, raw, prefer=()):
        self.raw = raw
        self.context = as_dict(raw.get("context"))
        payload = raw.get("data")
        self.data = parse_payload(payload if payload is not None else raw.get("event"))
        self.fields = as_dict(self.data)
        names = [n for n in (raw.get("name"), raw.get("event_type")) if isinstance(n, str) and n]
        self.name = next((n for n in names if n in prefer), names[0] if names else None)
        self.timestamp = utc_timestamp(raw.get("timestamp") or raw.get("time"))

    def get(self, key):
        """:returns: ``key`` from the context, else the top level, else the payload (or None)."""
        for where in (self.context, self.raw, self.fields):
            value = where.get(key)
            if value not in (None, ""):
                return value
        return None

    @property
    def username(self) -> str | None:
        """The user's name; None when unknown (edX logs ``""`` or ``"anonymous"`` then)."""
        for where in (self.context, self.raw, self.fields):
            name = where.get("username")
            if isinstance(name, str) and name not in ("", "anonymous"):
                return name
        return None

    @property
    def user_id(self):
        """The user's numeric id (as the event gives it), or None."""
        return self.get("user_id")

    @property
    def course_id(self) -> str | None:
        """The course key (``course-v1:...``), or None."""
        course = self.get("course_id")
        return course if isinstance(course, str) else None


_OLD_HTML_ID = re.compile(r"^i4x-[^-]+-[^-]+-[^-]+-(.+)$")  # i4x-<org>-<course>-<type>-<name>


def block_key(course_id, block_type: str, block: str) -> str:
    """:returns: the usage key of ``block`` of ``block_type`` in a course (unchanged if it is one)."""
    if ":" in block or not course_id:
        return block
    old = _OLD_HTML_ID.match(block)
    block = old.group(1) if old else block
    if course_id.startswith("course-v1:"):
        return f"block-v1:{course_id[len('course-v1:'):]}+type@{block_type}+block@{block}"
    if course_id.startswith("ccx-v1:"):
        return f"ccx-block-v1:{course_id[len('ccx-v1:'):]}+type@{block_type}+block@{block}"
    org, course = (course_id.split("/") + ["", ""])[:2]  # old "Org/Course/Run" keys
    return f"i4x://{org}/{course}/{block_type}/{block}"
