"""``GET /openapi.json``: an OpenAPI 3.1 description of hostd's HTTP API.

Each route of the app is described once here (:data:`_ROUTES`); the document
holds the routes the app actually has, with only the methods their resources
answer, plus one path per live view and query (``/query/grades``) whose
parameters are typed from the module table, as ``/schema`` shows them.
"""
from __future__ import annotations

import re
from importlib import metadata

import falcon

from .auth import request_policy
from .dashboard import schema_entries
from .federation import request_peers

__all__ = ["OpenAPIResource", "app_routes", "build_document", "openapi_path"]

OPENAPI_VERSION = "3.1.0"
# Parameters travel to sandboxes as msgpack, whose integers are 64-bit.
_INT64 = {"type": "integer", "format": "int64", "minimum": -2 ** 63, "maximum": 2 ** 63 - 1}
_SCALARS = {"str": {"type": "string"}, "int": _INT64, "float": {"type": "number"}, "bool": {"type": "boolean"}}
_METHODS = ("get", "post", "put", "delete", "patch")


def app_routes(app: falcon.App) -> list[tuple[str, list[str]]]:
    """:returns: ``(URI template, [methods])`` of every route of ``app``, methods in lower case,
        only those its resource has a responder for."""
    routes, nodes = [], list(app._router._roots)  # falcon keeps no public list of routes
    while nodes:
        node = nodes.pop()
        nodes.extend(node.children or ())
        if node.resource is not None:
            routes.append((node.uri_template, [m for m in _METHODS if hasattr(node.resource, f"on_{m}")]))
    return sorted(routes)


def openapi_path(template: str) -> str:
    """:returns: a falcon URI template as an OpenAPI path (``{path:path}`` -> ``{path}``)."""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", template)


# -- building blocks --------------------------------------------------------------
def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _html(description: str) -> dict:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


_ERRORS = {"400": "bad or missing parameter, or a malformed body", "401": "no token, or an unknown one",
           "403": "the token lacks the scope, or a bad signature", "404": "no such name",
           "409": "conflicts with what is stored", "413": "body over limits.max_body_mb",
           "500": "the module raised", "502": "the module's process died during the call",
           "503": "the module (or the store) is not available", "504": "no answer in time"}


def _operation(summary: str, responses: dict, errors=(), tag: str = "admin", **more) -> dict:
    """One operation; ``errors`` are status codes answered with the JSON error body
    (401 and 403 always: a token may be required)."""
    codes = sorted({*errors, "401", "403"})
    return {"summary": summary, "tags": [tag], **more,
            "responses": {**responses, **{c: {"$ref": f"#/components/responses/E{c}"} for c in codes}}}


def _path_param(name: str, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1}}


_FREE_PARAMS = {"name": "params", "in": "query", "style": "form", "explode": True,
                "description": "the endpoint's request parameters (a list: the key repeated)",
                "schema": {"type": "object", "additionalProperties": {"type": "string"}}}
_FORMAT = {"name": "f", "in": "query", "description": "``html`` for people, else JSON",
           "schema": {"type": "string", "enum": ["json", "html"]}}
_CALL_ERRORS = ("400", "404", "500", "502", "503", "504")


def _param_schema(param: dict, in_query: bool) -> dict:
    kind = param["type"]
    if kind.startswith("list[") and kind.endswith("]"):
        schema = {"type": "array", "items": _param_schema({"type": kind[5:-1]}, in_query)}
    else:
        schema = dict(_SCALARS.get(kind, {"type": "string"} if in_query else {}))
    if not param.get("required", True) and param.get("default") is not None:
        schema["default"] = param["default"]
    return schema


def _endpoint_path(entry: dict) -> dict:
    """The path item of one live view or query, its parameters typed."""
    kind, name, params = entry["class"], entry["name"], entry["params"]
    what = f"{kind} {name!r} of module {entry['module']!r}"
    description = entry.get("doc") or ""
    query_params = [{"name": p["name"], "in": "query", "required": p["required"],
                     "schema": _param_schema(p, True),
                     **({"style": "form", "explode": True} if p["type"].startswith("list[") else {})}
                    for p in params]
    key = re.sub(r"\W", "_", name)
    if kind == "view":
        return {"get": _operation(f"The HTML of {what}", {"200": _html("the view's HTML")}, _CALL_ERRORS,
                                  "views", description=description, operationId=f"view_{key}",
                                  parameters=query_params)}
    body = {"type": "object", "properties": {p["name"]: _param_schema(p, False) for p in params},
            "required": [p["name"] for p in params if p["required"]]}
    result = _json({}, "the query's JSON result")
    return {
        "get": _operation(f"The result of {what}", {"200": result}, _CALL_ERRORS, "queries",
                          description=description, operationId=f"query_{key}_get", parameters=query_params),
        "post": _operation(f"The result of {what}, parameters in a JSON body", {"200": result},
                           (*_CALL_ERRORS, "413"), "queries", description=description,
                           operationId=f"query_{key}_post",
                           requestBody={"required": bool(body["required"]),
                                        "content": {"application/json": {"schema": body}}}),
    }


def _names(entries, kind) -> dict:
    """A path parameter ``name`` listing the live names of one kind as examples."""
    names = sorted({e["name"] for e in entries if e["class"] == kind})
    param = _path_param("name", f"a {kind} name (see /schema)")
    if names:
        param["examples"] = {n: {"value": n} for n in names[:20]}
    return param


# -- the routes ------------------------------------------------------------------------
# Each gives the path item of one URI template (OpenAPI form) from the live /schema entries.
_INGEST = _json(_ref("IngestAnswer"), "accepted after the matching realtime handlers ran")
_ROUTES = {
    "/": lambda entries: {"get": _operation(
        "The dashboard", {"200": _html("modules, states, views")}, ("400",), "pages",
        parameters=[{"name": "view_timeout_s", "in": "query", "schema": {
            "type": "number", "exclusiveMinimum": 0, "maximum": 3600},
            "description": "seconds after which each view's frame gives up (default: its module's"
                           " call_timeout_s and a few seconds)"}])},
    "/assets/{file}": lambda entries: {"get": _operation(
        "The dashboard's script and stylesheet",
        {"200": {"description": "the file", "content": {"text/javascript": {"schema": {"type": "string"}},
                                                        "text/css": {"schema": {"type": "string"}}}}},
        ("404",), "pages", parameters=[_path_param("file", "dashboard.js or dashboard.css")])},
    "/view/{name}": lambda entries: {"get": _operation(
        "The HTML of any view", {"200": _html("the view's HTML")}, _CALL_ERRORS, "views",
        parameters=[_names(entries, "view"), _FREE_PARAMS])},
    "/query/{name}": lambda entries: {
        "get": _operation("The result of any query", {"200": _json({}, "the query's JSON result")},
                          _CALL_ERRORS, "queries", parameters=[_names(entries, "query"), _FREE_PARAMS]),
        "post": _operation("The result of any query, parameters in a JSON body",
                           {"200": _json({}, "the query's JSON result")}, (*_CALL_ERRORS, "413"), "queries",
                           parameters=[_names(entries, "query"), _FREE_PARAMS],
                           requestBody={"content": {"application/json": {"schema": {"type": "object"}}}})},
    "/schema": lambda entries: {"get": _operation(
        "Every view and query with its parameters", {"200": {
            "description": "the entries (HTML with f=html)",
            "content": {"application/json": {"schema": {"type": "array", "items": _ref("SchemaEntry")}},
                        "text/html": {"schema": {"type": "string"}}}}}, parameters=[_FORMAT])},
    "/event_properties": lambda entries: {"get": _operation(
        "Every event property", {"200": {
            "description": "the properties (HTML with f=html)",
            "content": {"application/json": {"schema": {"type": "array", "items": _ref("EventProperty")}},
                        "text/html": {"schema": {"type": "string"}}}}}, parameters=[_FORMAT])},
    "/modules": lambda entries: {"get": _operation(
        "Every module's state, errors and handler detail",
        {"200": _json({"type": "object", "additionalProperties": _ref("ModuleStatus")}, "by module name")},
        ("504",))},
    "/modules/{name}/dead_letters": lambda entries: {"get": _operation(
        "A module's dead letters", {"200": _json({"type": "array", "items": {"type": "object"}},
                                                 "event, handler, error, attempts")}, ("404", "504"),
        parameters=[_path_param("name", "a module name")])},
    "/modules/{name}/dead_letters/retry": lambda entries: {"post": _operation(
        "Send a module's dead letters back through their handlers",
        {"202": _json({"type": "object", "required": ["retrying"],
                       "properties": {"retrying": {"type": "integer"}}}, "how many")}, ("404", "504"),
        parameters=[_path_param("name", "a module name")])},
    "/modules/{name}/cron/{task}/run": lambda entries: {"post": _operation(
        "Run a module's cron task now and wait for it",
        {"200": _json({"type": "object", "required": ["result", "seconds"],
                       "properties": {"result": {}, "seconds": {"type": "number"}}}, "what the task returned")},
        ("404", "409", "500", "502", "503", "504"),
        parameters=[_path_param("name", "a module name"), _path_param("task", "a cron task of the module")])},
    "/modules/{name}/rebuild": lambda entries: {"post": _operation(
        "Drop a module's data (or one handler's collections) and replay its handlers",
        {"202": _json({"type": "object", "required": ["handlers", "target", "dropped"],
                       "properties": {"handlers": {"type": "array", "items": {"type": "string"}},
                                      "target": {"type": "integer"},
                                      "dropped": {"type": "array", "items": {"type": "string"}}}},
                      "rebuilt once the handlers are past log position target")},
        ("400", "404", "503", "504"),
        parameters=[_path_param("name", "a module name"),
                    {"name": "handler", "in": "query", "schema": {"type": "string"},
                     "description": "only this handler (it must declare its collections)"}])},
    "/healthz": lambda entries: {"get": _operation(
        "Liveness, with a count of modules by state",
        {"200": _json({"type": "object", "required": ["status", "modules"],
                       "properties": {"status": {"const": "ok"},
                                      "modules": {"type": "object",
                                                  "additionalProperties": {"type": "integer"}}}},
                      "alive")})},
    "/metrics": lambda entries: {"get": _operation(
        "Figures for Prometheus: requests, call latency, events, module restarts, handler lag",
        {"200": {"description": "the Prometheus text exposition format",
                 "content": {"text/plain": {"schema": {"type": "string"}}}}})},
    "/event": lambda entries: {
        "post": _operation(
            "Log events (an object, a list, JSON strings of either, or an HTTPHandler record)",
            {"200": _INGEST, "202": _json(_ref("IngestAnswer"), "durably logged")}, ("400", "413", "504"),
            "events", requestBody={"required": True, "content": {
                "application/json": {"schema": {"anyOf": [
                    {"type": "object"}, {"type": "string"},
                    {"type": "array", "minItems": 1, "items": {"anyOf": [{"type": "object"}, {"type": "string"}]}}]}},
                "application/x-www-form-urlencoded": {"schema": _ref("LogRecord")}}}),
        "get": _operation(
            "Log the event of an HTTPHandler record given in the query string",
            {"200": _INGEST, "202": _json(_ref("IngestAnswer"), "durably logged")}, ("400", "504"), "events",
            parameters=[{"name": "msg", "in": "query", "required": True, "schema": {"type": "string"},
                         "description": "the event, as JSON"}])},
    "/fs/{module}/{path}": lambda entries: {"get": _operation(
        "A module's file, with a signature from fs.get_url",
        {"200": {"description": "the file", "content": {"*/*": {"schema": {}}}}}, ("404",), "files",
        parameters=[_path_param("module", "the module"), _path_param("path", "the file, under its fs"),
                    {"name": "expires", "in": "query", "schema": {"type": "string"}},
                    {"name": "sig", "in": "query", "schema": {"type": "string"}}])},
    "/static/{module}/{path}": lambda entries: {"get": _operation(
        "A file of a module's static/ folder",
        {"200": {"description": "the file", "content": {"*/*": {"schema": {}}}}}, ("404",), "files",
        parameters=[_path_param("module", "the module"), _path_param("path", "the file")])},
    "/metrics": lambda entries: {"get": _operation(
        "Prometheus metrics", {"200": {"description": "text exposition format",
                                       "content": {"text/plain": {"schema": {"type": "string"}}}}})},
    "/xapi/statements": lambda entries: {
        "post": _operation("Store xAPI statements (one or a list)",
                           {"200": _json({"type": "array", "items": {"type": "string"}}, "their ids")},
                           ("400", "409", "413", "504"), "xapi", requestBody={"required": True, "content": {
                               "application/json": {"schema": {"anyOf": [
                                   {"type": "object"}, {"type": "array", "items": {"type": "object"}}]}}}}),
        "put": _operation("Store one xAPI statement under statementId", {"204": {"description": "stored"}},
                          ("400", "409", "413", "504"), "xapi",
                          parameters=[{"name": "statementId", "in": "query", "required": True,
                                       "schema": {"type": "string", "format": "uuid"}}],
                          requestBody={"required": True,
                                       "content": {"application/json": {"schema": {"type": "object"}}}})},
    "/xapi/about": lambda entries: {"get": _operation(
        "The xAPI versions spoken here",
        {"200": _json({"type": "object", "required": ["version"],
                       "properties": {"version": {"type": "array", "items": {"type": "string"}}}},
                      "versions")}, tag="xapi")},
    "/login": lambda entries: {
        "get": {"summary": "The dashboard's sign-in form", "tags": ["pages"], "security": [{}],
                "responses": {"200": _html("the form")}},
        "post": {"summary": "Sign in: a known token is kept in an HttpOnly cookie", "tags": ["pages"],
                 "security": [{}], "requestBody": {"required": True, "content": {
                     "application/x-www-form-urlencoded": {"schema": {
                         "type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}}}}},
                 "responses": {"303": {"description": "signed in: to the dashboard, with the cookie",
                                       "headers": {"Location": {"schema": {"type": "string"}},
                                                   "Set-Cookie": {"schema": {"type": "string"}}}},
                               "401": _html("the form again: the token is not known"),
                               **{c: {"$ref": f"#/components/responses/E{c}"} for c in ("400", "403", "413")}}}},
    "/openapi.json": lambda entries: {"get": _operation(
        "This document", {"200": _json({"type": "object"}, "OpenAPI 3.1")})},
}

_COMPONENTS = {
    "schemas": {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
        "SchemaEntry": {"type": "object", "required": ["class", "name", "module", "params", "category", "doc"],
                        "properties": {
                            "class": {"enum": ["view", "query"]}, "name": {"type": "string"},
                            "module": {"type": "string"}, "category": {"type": "string"},
                            "doc": {"type": "string"},
                            "node": {"type": "string",
                                     "description": "local, or the URL of the peer that answers the name"},
                            "aliases": {"type": "array", "items": {"type": "string"},
                                        "description": "the other names of the same endpoint"},
                            "unavailable": {"type": "string",
                                            "description": "present when the peer is down: why"},
                            "params": {"type": "array", "items": {
                                "type": "object", "required": ["name", "type", "required", "default"],
                                "properties": {"name": {"type": "string"}, "type": {"type": "string"},
                                               "required": {"type": "boolean"}, "default": {}}}}}},
        "EventProperty": {"type": "object", "required": ["namespace", "name", "sources"],
                          "properties": {"namespace": {"type": ["string", "null"]}, "name": {"type": "string"},
                                         "sources": {"type": "array"}, "doc": {"type": ["string", "null"]}}},
        "ModuleStatus": {"type": "object", "required": ["state"], "properties": {
            "state": {"enum": ["starting", "running", "restarting", "crashloop", "failed", "stopped"]},
            "pid": {"type": ["integer", "null"]}, "restarts": {"type": "integer"},
            "last_error": {"type": ["string", "null"]}, "lag": {"type": "integer"},
            "handled": {"type": "integer"}, "dead_letters": {"type": "integer"}}},
        "IngestAnswer": {"type": "object", "required": ["accepted", "duplicates", "ids"], "properties": {
            "accepted": {"type": "integer"}, "duplicates": {"type": "integer"},
            "ids": {"type": "array", "items": {"type": "string"}}}},
        "LogRecord": {"type": "object", "required": ["msg"], "properties": {"msg": {"type": "string"}},
                      "description": "the fields logging.handlers.HTTPHandler sends; msg holds the event"},
    },
    "responses": {f"E{code}": _json(_ref("Error"), text) for code, text in _ERRORS.items()},
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
}


def build_document(routes, entries: list[dict]) -> dict:
    """Describe an app's routes.

    :param routes: ``(URI template, [methods])`` as :func:`app_routes` gives them.
    :param entries: the live ``/schema`` entries: one path per view and query.
    :returns: the OpenAPI document; a route without a description here is left out.
    """
    paths = {}
    for template, methods in routes:
        path = openapi_path(template)
        describe = _ROUTES.get(path)
        if describe is not None:
            paths[path] = {m: op for m, op in describe(entries).items() if m in methods}
    for entry in entries:
        path = f"/{entry['class']}/{entry['name']}"
        if f"/{entry['class']}/{{name}}" in paths and "{" not in entry["name"] and "/" not in entry["name"]:
            paths[path] = _endpoint_path(entry)
    try:
        version = metadata.version("insights")
    except metadata.PackageNotFoundError:
        version = "unreleased"
    return {"openapi": OPENAPI_VERSION,
            "info": {"title": "Insights", "version": version,
                     "description": "hostd's HTTP API. Errors are JSON {\"error\": {\"code\", \"message\"}}."},
            "paths": paths, "components": _COMPONENTS, "security": [{}, {"bearer": []}]}


class OpenAPIResource:
    """``GET /openapi.json``: the OpenAPI description of ``app``, with the live modules.

    :param web: the :class:`hostd.web.WebContext` (its module table).
    :param app: the app whose routes are described.
    """

    def __init__(self, web, app: falcon.App):
        self._web = web
        self._app = app

    def on_get(self, req, resp):
        resp.media = build_document(app_routes(self._app),
                                    schema_entries(self._web.table.snapshot(), request_policy(req),
                                                   request_peers(self._web, req)))
