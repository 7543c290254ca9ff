"""The HTTP resources of hostd, one noun each."""
from __future__ import annotations

import mimetypes
import os
import socket
from pathlib import Path, PurePosixPath

import falcon

from sandbox.errors import BadParameter, EndpointNotFound
from sandbox.filestore import verify_path
from sandbox.injection import check as check_params

from . import strictjson
from .auth import request_policy
from .errors import BadBody, BadEventBatch, BodyTimeout, Forbidden, PayloadTooLarge
from .eventbody import events_from_body, events_from_form
from .federation import request_peers
from .module_files import WebFiles
from .policy import OPEN, Policy

__all__ = ["ViewResource", "QueryResource", "EventResource", "ModulesResource", "HealthResource",
           "FileResource", "StaticResource", "DeadLettersResource", "DeadLettersRetryResource", "read_body",
           "call_endpoint"]


def read_body(req, config) -> bytes:
    """Read the whole request body, sent with a ``Content-Length`` or chunked.

    The server's socket gets ``server.body_timeout_s`` as a timeout first, so a client
    that stops sending cannot hold a worker thread for longer than that.

    :param config: the configuration (``limits.max_body_mb``, ``server.body_timeout_s``).
    :returns: the body.
    :raises PayloadTooLarge: over ``limits.max_body_mb`` MiB.
    :raises BadBody: shorter than its ``Content-Length`` (the client closed early), or badly chunked.
    :raises BodyTimeout: the client stopped sending.
    """
    max_mb = config["limits.max_body_mb"]
    limit = int(max_mb * 1024 * 1024)
    length = req.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body of {length} bytes is over {max_mb:g} MiB")
    sock = req.env.get("gunicorn.socket")
    if sock is not None:
        sock.settimeout(config["server.body_timeout_s"])  # gunicorn sets it back for the next request
    try:
        # Without a Content-Length (chunked), the server's own reader knows where the body ends.
        body = req.bounded_stream.read(length) if length is not None else req.stream.read(limit + 1)
    except TimeoutError:
        _stop_reading(sock)
        raise BodyTimeout(f"no part of the request body arrived for {config['server.body_timeout_s']:g} s") from None
    except Exception as err:  # the server's reader signals bad chunked framing with its own errors
        _stop_reading(sock)
        raise BadBody(f"unreadable request body ({type(err).__name__})") from None
    if len(body) > limit:
        raise PayloadTooLarge(f"request body is over {max_mb:g} MiB")
    if length is not None and len(body) < length:
        _stop_reading(sock)
        raise BadBody(f"request body of {len(body)} bytes is shorter than its Content-Length of {length}")
    return body


def _stop_reading(sock) -> None:
    """End a connection whose body went wrong once the answer is sent.

    gunicorn would keep it alive and, before the next request, read the rest of the
    body, without a timeout; shut for reading, the connection ends there instead.
    """
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass  # the client is gone already


def request_params(req, config) -> dict:
    """:returns: parameters from the query string, merged with a JSON object body (POST).

    :raises BadParameter: a body value holds what JSON or the store cannot (``NaN``, ``1e999``...).
    """
    params = dict(req.params)
    if req.method == "POST":
        body = read_body(req, config)
        if body.strip():
            try:
                document = strictjson.loads(body.decode("utf-8"))
            except ValueError as err:  # UnicodeDecodeError included
                raise falcon.HTTPBadRequest(title="invalid JSON body", description=str(err)) from None
            if not isinstance(document, dict):
                raise falcon.HTTPBadRequest(title="invalid JSON body",
                                            description="the body must be a JSON object of parameters")
            for name, value in document.items():
                reason = strictjson.problem({name: value}, stored=False)
                if reason:
                    raise BadParameter(name, reason)
            params.update(document)
    return params


def call_endpoint(web, kind: str, name: str, params: dict, policy: Policy = OPEN, peers=None):
    """Call a view or query once its parameters passed the checks its sandbox would make.

    :param policy: the caller's token policy: a name it denies is not found, and its fixed
        parameters replace whatever the request sent, before the checks.
    :param peers: the :class:`~hostd.federation.Federation` answering names no module of
        this node has (``None``: this node's modules only).
    :returns: the endpoint's result.
    :raises EndpointNotFound: no such name, or one the policy denies (the same answer);
        the message names the modules that failed to load, since the name may be one of theirs,
        and the peers that could not be reached.
    :raises BadParameter: a missing or unconvertible parameter: never sent to the sandbox.
    :raises InsightsError: whatever the call raised (a peer's error as the peer answered it).
    """
    snapshot = web.table.snapshot()
    found = snapshot.find(kind, name)
    if found is None and peers is not None:
        remote = peers.find(kind, name)
        if remote is not None and policy.shows(remote, name):
            return peers.call(kind, name, policy.force(params))
    if found is None or not policy.shows(found[1], name):
        message = f"no {kind} named {name!r}"
        failed = sorted(n for n, record in snapshot.modules.items() if record.get("state") == "failed")
        if failed:
            message += f"; modules failed to load: {', '.join(failed)} \N{EM DASH} it may be in one of them"
        unreachable = peers.unreachable() if found is None and peers is not None else []
        if unreachable:
            message += f"; peers unreachable: {', '.join(unreachable)} \N{EM DASH} it may be on one of them"
        raise EndpointNotFound(message)
    _record, endpoint = snapshot.resolve(kind, name)
    params = policy.force(params)
    check_params(endpoint.get("params", []), params)
    return web.call(kind, name, params)


class ViewResource:
    """``GET /view/{name}``: the HTML of a view."""

    def __init__(self, web):
        self._web = web

    def on_get(self, req, resp, name):
        resp.content_type = falcon.MEDIA_HTML
        resp.text = call_endpoint(self._web, "view", name, dict(req.params), request_policy(req),
                                  request_peers(self._web, req))


class QueryResource:
    """``GET``/``POST /query/{name}``: the JSON result of a query."""

    def __init__(self, web):
        self._web = web

    def on_get(self, req, resp, name):
        resp.media = call_endpoint(self._web, "query", name, request_params(req, self._web.config),
                                   request_policy(req), request_peers(self._web, req))

    on_post = on_get


class EventResource:
    """``POST``/``GET /event``: ingestion."""

    state_changing = True  # see hostd.origin

    def __init__(self, web):
        self._web = web

    def on_post(self, req, resp):
        body = read_body(req, self._web.config)
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

    state_changing = True  # see hostd.origin

    def __init__(self, web):
        self._web = web

    def on_post(self, req, resp, name):
        resp.status = falcon.HTTP_202
        resp.media = self._web.retry_dead_letters(name)


class CronRunResource:
    """``POST /modules/{name}/cron/{task}/run``: run a cron task now (``hostd cron run``)."""

    state_changing = True  # see hostd.origin

    def __init__(self, web):
        self._web = web

    def on_post(self, req, resp, name, task):
        resp.media = self._web.run_cron(name, task)


class RebuildResource:
    """``POST /modules/{name}/rebuild[?handler=NAME]``: drop the data and replay (``hostd rebuild``)."""

    state_changing = True  # see hostd.origin

    def __init__(self, web):
        self._web = web

    def on_post(self, req, resp, name):
        resp.status = falcon.HTTP_202
        resp.media = self._web.rebuild(name, req.get_param("handler"))


class ModulesResource:
    """``GET /modules``: every module's state, errors and handler detail."""

    def __init__(self, web):
        self._web = web

    def on_get(self, req, resp):
        resp.media = self._web.module_status()


class HealthResource:
    """``GET /healthz``: liveness, this node's id, and a count of its modules by state."""

    def __init__(self, web):
        self._web = web

    def on_get(self, req, resp):
        states = {}
        for record in self._web.table.snapshot().modules.values():
            states[record["state"]] = states.get(record["state"], 0) + 1
        resp.media = {"status": "ok", "node": self._web.config["cluster.node_id"], "modules": states}


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
