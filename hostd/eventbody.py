"""Reading the events of a ``POST /event`` / ``GET /event`` request.

Accepted forms: a JSON object; a list of objects; a JSON-encoded string of
either; a list of JSON strings; and the form-encoded records that
``logging.handlers.HTTPHandler`` sends (GET query string or POST body), whose
``msg`` field holds the JSON event. A batch is all or nothing: the first bad
item raises :class:`~hostd.errors.BadEventBatch` naming its index, before
anything of the request reaches the log. Bad items are those that are not JSON
objects and those holding what the store cannot keep (:mod:`hostd.strictjson`).
"""
from __future__ import annotations

from urllib.parse import parse_qs

from . import strictjson
from .errors import BadEventBatch

__all__ = ["EVENT_MAX_DEPTH", "decode_body", "parse_json", "check_event", "events_from_json", "events_from_form",
           "events_from_body"]

#: Levels of nesting an event may have: the log keeps each event one level down in its document.
EVENT_MAX_DEPTH = strictjson.MAX_DEPTH - 1


def decode_body(body: bytes) -> str:
    """:returns: the body as text. :raises BadEventBatch: it is not UTF-8."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadEventBatch(None, "body is not UTF-8") from None


def parse_json(text: str, index=None):
    """Parse JSON text with :func:`hostd.strictjson.loads`.

    :param index: the item it is (``None``: the whole body), for the error.
    :returns: the decoded value, possibly holding :class:`~hostd.strictjson.Refused` markers.
    :raises BadEventBatch: not JSON.
    """
    try:
        return strictjson.loads(text)
    except ValueError as err:
        raise BadEventBatch(index, f"invalid JSON: {err}") from None


def check_event(event: dict, index=None) -> dict:
    """:returns: ``event``. :raises BadEventBatch: it holds something the store cannot keep."""
    reason = strictjson.problem(event, EVENT_MAX_DEPTH)
    if reason:
        raise BadEventBatch(index, reason)
    return event


def _item(value, index):
    if isinstance(value, str):
        value = parse_json(value, index)
    if not isinstance(value, dict):
        raise BadEventBatch(index, f"an event must be a JSON object, not {_kind(value)}")
    return check_event(value, index)


def _kind(value) -> str:
    return "a number out of range" if isinstance(value, strictjson.Refused) else type(value).__name__


def events_from_json(document) -> list[dict]:
    """:returns: the events of a decoded JSON body (object, list, or JSON string of either)."""
    if isinstance(document, str):
        document = parse_json(document)
    if isinstance(document, dict):
        return [check_event(document)]
    if isinstance(document, list):
        if not document:
            raise BadEventBatch(None, "empty list of events")
        return [_item(value, index) for index, value in enumerate(document)]
    raise BadEventBatch(None, f"expected an event object or a list of events, not {_kind(document)}")


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
    text = decode_body(body)
    looks_like_json = text.lstrip()[:1] in ("{", "[", '"')
    if content_type == "application/x-www-form-urlencoded" and not looks_like_json:
        return events_from_form({k: v for k, v in parse_qs(text, keep_blank_values=True).items()})
    return events_from_json(parse_json(text))
