"""time_on_task: what one event tells about the time a learner spends (``evt.time_on_task.*``).

``session``
    the event's ``session`` (browser and mobile events carry it), else its
    ``context.session`` (some server events), else None.
``timestamp``
    its ``time`` as Unix seconds (a float); a time without an offset is UTC;
    None without a readable ``time``.

An event's time on task is the time until the learner's next event of the same
session, which one event cannot know: the module computes it from the stored
times (see its documentation); these properties are what it needs of each one.

This file is imported by hostd and by every sandbox: standard library only,
no work at import.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sandbox.properties import event_property

__all__ = ["session", "timestamp"]


@event_property("session", namespace="time_on_task")
def session(event) -> str | None:
    """:returns: the event's session key (its own, else its context's), or None."""
    context = event.get("context")
    for value in (event.get("session"), context.get("session") if isinstance(context, dict) else None):
        if isinstance(value, str) and value:
            return value
    return None


@event_property("timestamp", namespace="time_on_task")
def timestamp(event) -> float | None:
    """:returns: the event's ``time`` in Unix seconds (UTC when it has no offset), or None."""
    raw = event.get("time")
    if not isinstance(raw, str):
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
