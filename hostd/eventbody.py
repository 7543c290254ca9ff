"""Reading the events of a ``POST /event`` / ``GET /event`` request (SPEC §3).

Accepted forms: a JSON object; a list of objects; a JSON-encoded string of
either; a list of JSON strings; and the form-encoded records that
``logging.handlers.HTTPHandler`` sends (GET query string or POST body), whose
``msg`` field holds the JSON event. A batch is all or nothing: the first bad
item raises :class:`~hostd.errors.BadEventBatch` naming its index.
"""
from __future__ import annotations

import json
from urllib.parse import parse_qs

from .errors import BadEventBatch

__all__ = ["events_from_json", "events_from_form", "events_from_body"]


def _item(value, index):
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as err:
            raise BadEventBatch(index, f"invalid JSON: {err}") from None
    if not isinstance(value, dict):
        raise BadEventBatch(index, f"an event must be a JSON object, not {type(value).__name__}")
    return value


def events_from_json(document) -> list[dict]:
    """:returns: the events of a decoded JSON body (object, list, or JSON string of either)."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError as err:
            raise BadEventBatch(None, f"invalid JSON string: {err}") from None
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list):
        if not document:
            raise BadEventBatch(None, "empty list of events")
        return [_item(value, index) for index, value in enumerate(document)]
    raise BadEventBatch(None, f"expected an event object or a list of events, not {type(document).__name__}")


def events_from_form(fields: dict) -> list[dict]:
    """:returns: the event of a ``logging.handlers.HTTPHandler`` record (its ``msg`` field)."""
    msg = fields.get("msg")
    if isinstance(msg, list):
        msg = msg[-1]
    if msg is None:
        raise BadEventBatch(None, "form-encoded request without a 'msg' field")
    return events_from_json(_item(msg, None) if isinstance(msg, str) and msg.lstrip().startswith("{")
                            else msg)


def events_from_body(body: bytes, content_type: str) -> list[dict]:
    """:returns: the events of a request body, by content type."""
    content_type = (content_type or "").split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadEventBatch(None, "body is not UTF-8") from None
    looks_like_json = text.lstrip()[:1] in ("{", "[", '"')
    if content_type == "application/x-www-form-urlencoded" and not looks_like_json:
        return events_from_form({k: v for k, v in parse_qs(text, keep_blank_values=True).items()})
    try:
        document = json.loads(text)
    except ValueError as err:
        raise BadEventBatch(None, f"invalid JSON: {err}") from None
    return events_from_json(document)
