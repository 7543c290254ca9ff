"""Mapping domain errors to HTTP, in one place."""
from __future__ import annotations

import logging

import falcon

from sandbox.errors import InsightsError

__all__ = ["STATUS_BY_CODE", "BadEventBatch", "BadBody", "BodyTimeout", "PayloadTooLarge", "Forbidden",
           "Unauthorized", "ForeignOrigin", "handle_insights_error", "handle_unexpected"]

log = logging.getLogger("insights.http")

STATUS_BY_CODE = {
    "bad_parameter": falcon.HTTP_400, "bad_event": falcon.HTTP_400, "bad_body": falcon.HTTP_400,
    "not_found": falcon.HTTP_404, "not_cached": falcon.HTTP_404,
    "unauthorized": falcon.HTTP_401, "forbidden": falcon.HTTP_403, "foreign_origin": falcon.HTTP_403,
    "body_timeout": falcon.HTTP_408, "conflict": falcon.HTTP_409, "too_large": falcon.HTTP_413,
    "module_error": falcon.HTTP_500, "load_error": falcon.HTTP_500, "internal": falcon.HTTP_500,
    "crashed": falcon.HTTP_502, "not_running": falcon.HTTP_503, "rebuilding": falcon.HTTP_503, "store_unavailable": falcon.HTTP_503,
    "peer_unavailable": falcon.HTTP_503,
    "timeout": falcon.HTTP_504,
}


class BadEventBatch(InsightsError):
    """An item of an event batch is not a JSON object; nothing of the batch is stored.

    :param index: the item's position in the request (``None``: the whole body).
    """

    code = "bad_event"

    def __init__(self, index, message: str):
        where = "request body" if index is None else f"item {index}"
        super().__init__(f"{where}: {message}")
        self.index = index

    def to_reply_fields(self) -> dict:
        return {**super().to_reply_fields(), "index": self.index}


class BadBody(InsightsError):
    """The request body does not match its framing (shorter than its ``Content-Length``...)."""

    code = "bad_body"


class BodyTimeout(InsightsError):
    """The client stopped sending its body for longer than ``server.body_timeout_s``."""

    code = "body_timeout"


class PayloadTooLarge(InsightsError):
    """The request body is over ``limits.max_body_mb``."""

    code = "too_large"


class Forbidden(InsightsError):
    """A signed URL is missing, bad or expired, or a token lacks the scope of a route.

    :param challenge: the ``WWW-Authenticate`` header to answer with, if any.
    """

    code = "forbidden"

    def __init__(self, message: str, challenge: str | None = None):
        super().__init__(message)
        self.headers = {"WWW-Authenticate": challenge} if challenge else {}


class Unauthorized(Forbidden):
    """No token where one is required, or a token hostd does not know (401).

    :param challenge: the ``WWW-Authenticate`` header to answer with.
    """

    code = "unauthorized"


class ForeignOrigin(InsightsError):
    """A state-changing request sent by a web page of another origin (a forged request)."""

    code = "foreign_origin"


def _error_body(err: InsightsError) -> dict:
    return {"error": err.to_reply_fields()}


def handle_insights_error(req, resp, err, params):
    """Answer a domain error as JSON with its status."""
    resp.status = STATUS_BY_CODE.get(err.code, falcon.HTTP_500)
    resp.content_type = falcon.MEDIA_JSON  # a view may have set HTML before the call failed
    resp.media = _error_body(err)
    for name, value in getattr(err, "headers", {}).items():
        resp.set_header(name, value)


def handle_unexpected(req, resp, err, params):
    """Falcon's own errors in our JSON form; a bug of hostd: log the traceback, answer 500 without it."""
    resp.content_type = falcon.MEDIA_JSON
    if isinstance(err, falcon.HTTPError):
        resp.status = err.status
        if err.headers:  # e.g. the Allow header of a 405
            resp.set_headers(err.headers)
        resp.media = {"error": {"code": "http", "message": err.title + (f": {err.description}" if err.description else "")}}
        return
    log.error("unexpected error on %s %s", req.method, req.path, exc_info=err)
    resp.status = falcon.HTTP_500
    resp.media = {"error": {"code": "internal", "message": "internal error (see the hostd log)"}}
