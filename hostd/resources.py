"""The HTTP resources of hostd (SPEC §6), one noun each."""
from __future__ import annotations

import json
import mimetypes
import os
from pathlib import Path, PurePosixPath

import falcon

from sandbox.errors import EndpointNotFound
from sandbox.filestore import verify_path

from .errors import BadEventBatch, Forbidden, PayloadTooLarge
from .eventbody import events_from_body, events_from_form
from .module_files import WebFiles

__all__ = ["ViewResource", "QueryResource", "EventResource", "ModulesResource", "HealthResource",
           "FileResource", "StaticResource", "DeadLettersResource", "DeadLettersRetryResource", "read_body"]


def read_body(req, max_mb: float) -> bytes:
    """:returns: the request body. :raises PayloadTooLarge: over ``max_mb`` MiB."""
    limit = int(max_mb * 1024 * 1024)
    if req.content_length is not None and req.content_length > limit:
        raise PayloadTooLarge(f"request body of {req.content_length} bytes is over {max_mb:g} MiB")
    body = req.bounded_stream.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"request body is over {max_mb:g} MiB")
    return body


def request_params(req, max_mb: float) -> dict:
    """:returns: parameters from the query string, merged with a JSON object body (POST)."""
    params = dict(req.params)
    if req.method == "POST":
        body = read_body(req, max_mb)
        if body.strip():
            try:
                document = json.loads(body)
            except ValueError as err:
                raise falcon.HTTPBadRequest(title="invalid JSON body", description=str(err)) from None
            if not isinstance(document, dict):
                raise falcon.HTTPBadRequest(title="invalid JSON body",
                                            description="the body must be a JSON object of parameters")
            params.update(document)
    return params


class ViewResource:
    """``GET /view/{name}``: the HTML of a view."""

    def __init__(self, web):
        self._web = web

    def on_get(self, req, resp, name):
        resp.content_type = falcon.MEDIA_HTML
        resp.text = self._web.call("view", name, dict(req.params))


class QueryResource:
    """``GET``/``POST /query/{name}``: the JSON result of a query."""

    def __init__(self, web):
        self._web = web

    def on_get(self, req, resp, name):
        resp.media = self._web.call("query", name, request_params(req, self._web.config["limits.max_body_mb"]))

    on_post = on_get


class EventResource:
    """``POST``/``GET /event``: ingestion (SPEC §3)."""

    def __init__(self, web):
        self._web = web

    def on_post(self, req, resp):
        body = read_body(req, self._web.config["limits.max_body_mb"])
        if not body.strip():
            raise BadEventBatch(None, "empty body")
        self._accept(resp, events_from_body(body, req.content_type))

    def on_get(self, req, resp):
        if not req.params:
            raise BadEventBatch(None, "no event in the query string (expected HTTPHandler's 'msg')")
        self._accept(resp, events_from_form(req.params))

    def _accept(self, resp, events):
        answer = self._web.append_events(events)
        resp.status = falcon.HTTP_200 if answer.pop("realtime", False) else falcon.HTTP_202
        resp.media = answer


class DeadLettersResource:
    """``GET /modules/{name}/dead_letters``: events a module's handlers gave up on."""

    def __init__(self, web):
        self._web = web

    def on_get(self, req, resp, name):
        resp.media = self._web.dead_letters(name)


class DeadLettersRetryResource:
    """``POST /modules/{name}/dead_letters/retry``: send them back through their handlers."""

    def __init__(self, web):
        self._web = web

    def on_post(self, req, resp, name):
        resp.status = falcon.HTTP_202
        resp.media = self._web.retry_dead_letters(name)


class ModulesResource:
    """``GET /modules``: every module's state, errors and handler detail."""

    def __init__(self, web):
        self._web = web

    def on_get(self, req, resp):
        resp.media = self._web.module_status()


class HealthResource:
    """``GET /healthz``: liveness, with a count of modules by state."""

    def __init__(self, web):
        self._web = web

    def on_get(self, req, resp):
        states = {}
        for record in self._web.table.snapshot().modules.values():
            states[record["state"]] = states.get(record["state"], 0) + 1
        resp.media = {"status": "ok", "modules": states}


class FileResource:
    """``GET /fs/{module}/{path}``: a module's file, with a valid signature from ``fs.get_url``.

    The file comes from the backend ``storage.fs`` names; one that expired is 404 even
    before the sweeper deleted it.
    """

    def __init__(self, web):
        self._web = web
        self._files = WebFiles(web)

    def on_get(self, req, resp, module, path):
        if not verify_path(self._web.fs_key(module), module, path, req.get_param("expires"),
                           req.get_param("sig")):
            raise Forbidden("missing, bad or expired signature")
        try:
            stream = self._files.store(module).open(path, "rb")
        except (OSError, ValueError):  # missing, expired, a folder, an unsafe name
            raise falcon.HTTPNotFound(title="no such file") from None
        send_stream(resp, path, stream)


def send_file(resp, path: Path) -> None:
    """Answer with the file at ``path``, its content type guessed from its name."""
    send_stream(resp, path.name, open(path, "rb"))


def send_stream(resp, name: str, stream) -> None:
    """Answer with an open binary ``stream``, its content type guessed from ``name``."""
    resp.content_type = mimetypes.guess_type(PurePosixPath(name).name)[0] or "application/octet-stream"
    resp.content_length = stream.seek(0, os.SEEK_END)
    stream.seek(0)
    resp.stream = stream


class StaticResource:
    """``GET /static/{module}/{path}``: a file of the module's ``static/`` folder.

    A path with ``..``, an absolute path, or one that resolves outside the folder
    (a symlink leading out) is refused with 403.
    """

    def __init__(self, web):
        self._web = web

    def on_get(self, req, resp, module, path):
        record = self._web.table.snapshot().modules.get(module)
        if record is None:
            raise EndpointNotFound(f"no module named {module!r}")
        if path.startswith("/") or ".." in path.split("/") or "\0" in path:
            raise falcon.HTTPForbidden(title="path not allowed", description="static paths stay inside static/")
        root = Path(record["path"], "static").resolve()
        target = (root / path).resolve()
        if root not in target.parents:
            raise falcon.HTTPForbidden(title="path not allowed", description="it leads out of static/")
        if not target.is_file():
            raise falcon.HTTPNotFound(title="no such file")
        send_file(resp, target)
