"""``GET /openapi.json``: in-process against the app factory, then schemathesis against a real hostd.

The schemathesis run uses ``tests/client_modules/b`` (well-behaved endpoints of
every parameter type), a bounded number of examples and a fixed seed, and asserts
no 5xx and conformance of every answer to the document.
"""
from __future__ import annotations

import json
from pathlib import Path

import falcon.testing
import hypothesis
import pytest
import schemathesis
from openapi_spec_validator import validate

from hostd.app import create_app
from hostd.modtable import Snapshot
from hostd.openapi import app_routes, openapi_path
from running_hostd import start_daemon, stop_daemon

pytestmark = pytest.mark.timeout(600)

MODULES = Path(__file__).resolve().parent / "client_modules"


def _endpoint(cls, name, params=(), aliases=()):
    return {"class": cls, "name": name, "aliases": list(aliases), "module": "grades", "function": name,
            "params": list(params), "category": "+".join(p["name"] for p in params), "doc": f"{name} doc",
            "options": {}}


COURSE = {"name": "course", "type": "str", "required": True, "default": None}
LIMIT = {"name": "limit", "type": "int", "required": False, "default": 10}
TAGS = {"name": "tags", "type": "list[str]", "required": False, "default": None}
TABLE = {"modules": {"grades": {"name": "grades", "state": "running", "restarts": 0, "pid": 1, "endpoints": [
    _endpoint("query", "course_grades", [COURSE, LIMIT, TAGS], aliases=["grades_alias"]),
    _endpoint("view", "grade_chart", [LIMIT]),
    _endpoint("handler", "count_grades"),
]}}}


class _Web:
    """What the resources read at start-up and the document needs: the module table."""

    config = {"limits.max_body_mb": 1.0, "server.bind": "127.0.0.1", "auth.required": "auto", "auth.tokens": []}

    def __init__(self):
        self.table = self

    def snapshot(self):
        return Snapshot(TABLE)


@pytest.fixture(scope="module")
def app():
    return create_app(_Web())


@pytest.fixture(scope="module")
def document(app):
    response = falcon.testing.TestClient(app).simulate_get("/openapi.json")
    assert response.status_code == 200, response.text
    return response.json


def test_the_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises on the first violation of the OpenAPI 3.1 schema


def test_every_route_and_method_of_the_app_is_described(app, document):
    routes = dict(app_routes(app))
    # the walk itself must see the app's routes, or this test could not fail
    assert {"/query/{name}", "/fs/{module}/{path:path}", "/openapi.json", "/event"} <= set(routes)
    assert routes["/event"] == ["get", "post"] and routes["/xapi/statements"] == ["post", "put"]
    missing = [(template, method) for template, methods in routes.items() for method in methods
               if method not in document["paths"].get(openapi_path(template), {})]
    assert missing == []
    assert not [p for p in document["paths"] if p.startswith(("/metrics", "/static")) and
                not any(openapi_path(t) == p for t in routes)]  # only routes the app has


def test_each_live_query_and_view_has_its_typed_path(document):
    paths = document["paths"]
    assert {"/query/course_grades", "/query/grades_alias", "/view/grade_chart"} <= set(paths)
    assert "/query/count_grades" not in paths and "/view/count_grades" not in paths  # handlers are not called
    get = {p["name"]: p for p in paths["/query/course_grades"]["get"]["parameters"]}
    assert get["course"]["required"] is True and get["course"]["schema"] == {"type": "string"}
    assert get["limit"]["schema"]["type"] == "integer" and get["limit"]["schema"]["default"] == 10
    assert get["tags"]["schema"] == {"type": "array", "items": {"type": "string"}} and get["tags"]["explode"]
    body = paths["/query/course_grades"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["course"] and body["properties"]["limit"]["type"] == "integer"
    assert "text/html" in paths["/view/grade_chart"]["get"]["responses"]["200"]["content"]
    names = paths["/query/{name}"]["get"]["parameters"][0]["examples"]
    assert set(names) == {"course_grades", "grades_alias"}


def test_the_schema_page_links_to_the_document(app):
    page = falcon.testing.TestClient(app).simulate_get("/schema", params={"f": "html"})
    assert 'href="/openapi.json"' in page.text


# -- schemathesis against a running hostd -----------------------------------------------------

@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    running = start_daemon(tmp_path_factory.mktemp("openapi"), MODULES / "b", {"forum"}, set())
    yield running
    stop_daemon(running)


@pytest.fixture(scope="module")
def api_schema(daemon):
    config = schemathesis.Config.from_dict({
        "seed": 20261203, "base-url": daemon.base,
        # positive data only: out-of-range integers are known 5xx bugs, checked one by one below
        "generation": {"max-examples": 12, "deterministic": True, "mode": "positive"},
    })
    schema = schemathesis.openapi.from_url(f"{daemon.base}/openapi.json", config=config)
    return schema


api = schemathesis.pytest.from_fixture("api_schema")

CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.status_code_conformance,
          schemathesis.checks.content_type_conformance, schemathesis.checks.response_schema_conformance,
          schemathesis.checks.response_headers_conformance]


@pytest.mark.e2e
@api.parametrize()
@hypothesis.settings(max_examples=12, deadline=None, derandomize=True,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_the_running_api_conforms_to_its_document(case):
    case.call_and_validate(checks=CHECKS, timeout=30)


# -- hostile input, each case once: what used to be 5xx bugs -------------------------------------

HUGE = 2 ** 70
HOSTILE = {
    "big-int-query-body": (
        "POST", "/query/posts", {"json": {"course": "x", "limit": HUGE}},
        "a JSON integer past 64 bits in a query's body: msgpack cannot pack it in the web worker (500)"),
    "big-int-query-string": (
        "GET", f"/query/echo?i={HUGE}&f=1&b=1&tags=a", {},
        "an int parameter past 64 bits is converted, then the result cannot be sent back (500)"),
    "big-int-event": (
        "POST", "/event", {"json": {"n": HUGE}},
        "an event with an integer past 64 bits: msgpack cannot pack it for the ingest thread (500)"),
    "nul-in-event-key": (
        "POST", "/event", {"json": {"a\x00b": 1}},
        "an event key with a NUL byte: the store refuses the document and hostd answers 500"),
    "lone-surrogate-event": (
        "POST", "/event", {"data": b'{"x": "\\ud800"}', "headers": {"Content-Type": "application/json"}},
        "a JSON string holding a lone surrogate cannot be encoded as UTF-8 (500)"),
    "lone-surrogate-query": (
        "POST", "/query/posts", {"data": b'{"course": "\\ud800"}', "headers": {"Content-Type": "application/json"}},
        "a JSON string holding a lone surrogate cannot be encoded as UTF-8 (500)"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("method, path, kwargs", [
    pytest.param(*case[:3], id=name) for name, case in HOSTILE.items()])
def test_hostile_input_is_a_client_error(daemon, method, path, kwargs):
    response = daemon.request(method, path, **kwargs)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert "error" in response.json()


@pytest.mark.e2e
def test_a_non_finite_float_parameter_is_refused(daemon):
    response = daemon.get("/query/echo?i=1&f=1e999&b=1&tags=a")
    assert response.status_code < 500, response.text
    json.loads(response.text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))


@pytest.mark.e2e
def test_a_method_not_allowed_says_which_are(daemon):
    response = daemon.request("DELETE", "/schema")
    assert response.status_code == 405
    assert "GET" in [m.strip() for m in response.headers.get("Allow", "").split(",")]
