"""hostd's HTTP API in-process: ``falcon.testing.TestClient`` against the app factory."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from urllib.parse import urlencode, urlsplit

import falcon.testing
import pytest

from hostd.app import create_app
from hostd.dashboard import error_summary
from hostd.modtable import Snapshot
from sandbox.errors import BadParameter, ModuleCrashed, ModuleRaised, ModuleTimeout, StoreUnavailable
from sandbox.filestore import FileStore, sign_path

pytestmark = pytest.mark.timeout(60)

SECRET_DETAIL = "secret-detail-do-not-leak"


def endpoint(cls, name, module, params=(), aliases=(), doc=""):
    return {"class": cls, "name": name, "aliases": list(aliases), "module": module,
            "function": name, "params": list(params), "category": "+".join(p["name"] for p in params),
            "doc": doc, "options": {}}


USER = {"name": "user", "type": "str", "required": True, "default": None}
LIMIT = {"name": "limit", "type": "int", "required": False, "default": 10}

TABLE = {"modules": {
    "grades": {
        "name": "grades", "state": "running", "restarts": 0, "pid": 101,
        "manifest": {"description": "Grades <script>alert('x')</script> per course"},
        "endpoints": [
            endpoint("query", "course_grades", "grades", [LIMIT], aliases=["grades_alias", "g.v2"],
                     doc="Grades of a course."),
            endpoint("view", "grade_chart", "grades", [LIMIT], doc="A chart <b>of grades</b>"),
            endpoint("view", "user_card", "grades", [USER]),
            endpoint("handler", "count_grades", "grades"),
        ]},
    "broken": {
        "name": "broken", "state": "crashloop", "restarts": 5, "pid": None, "manifest": {},
        "endpoints": [endpoint("query", "broken_query", "broken")]},
    "misc": {
        "name": "misc", "state": "running", "restarts": 1, "pid": 103, "manifest": {},
        "endpoints": [endpoint("query", "echo", "misc"), endpoint("query", "fails", "misc"),
                      endpoint("query", "crashes", "misc"), endpoint("query", "slow", "misc"),
                      endpoint("query", "needs", "misc", [USER]),
                      endpoint("query", "bug", "misc")]},
}}


class FakeWeb:
    """Stands in for :class:`hostd.web.WebContext`: what the resources use, nothing else."""

    def __init__(self, tmp_path, max_body_mb=1.0):
        self.config = {"limits.max_body_mb": max_body_mb, "server.body_timeout_s": 10.0,
                       "server.bind": "127.0.0.1", "auth.required": "auto", "auth.tokens": [],
                       "cluster.node_id": "node-a"}
        self._snapshot = Snapshot(TABLE)
        self.table = self
        self.calls = []
        self.appended = []
        self._fs_master = b"m" * 32
        self._fs_dir = tmp_path / "modules"
        self.store_down = False

    def snapshot(self):
        return self._snapshot

    def call(self, kind, name, params):
        self.calls.append((kind, name, params))
        record, description = self._snapshot.resolve(kind, name)
        if name == "fails":
            raise ModuleRaised("query 'fails' of module 'misc' raised ValueError")
        if name == "crashes":
            raise ModuleCrashed("module 'misc' died during query 'crashes'")
        if name == "slow":
            raise ModuleTimeout("query 'slow' did not answer within 1 s")
        if name == "needs" and "user" not in params:
            raise BadParameter("user", "missing")
        if name == "bug":
            raise RuntimeError(SECRET_DETAIL)
        if kind == "view":
            return f"<p>{description['name']} {json.dumps(params, sort_keys=True)}</p>"
        return {"endpoint": description["name"], "params": params}

    def append_events(self, events):
        if self.store_down:
            raise StoreUnavailable(f"event log unavailable: E11000 {{'seq': 17, '_id': ObjectId('{SECRET_DETAIL}')}}")
        self.appended.append(events)
        return {"accepted": len(events), "duplicates": 0, "ids": [f"id{i}" for i in range(len(events))]}

    def module_status(self):
        return {"grades": {"state": "running", "pid": 101}, "broken": {"state": "crashloop"}}

    def fs_key(self, module):
        return hmac.new(self._fs_master, f"fs|{module}".encode(), hashlib.sha256).digest()

    def module_fs_root(self, module):
        return str(self._fs_dir / module / "fs")


@pytest.fixture
def web(tmp_path):
    return FakeWeb(tmp_path)


@pytest.fixture
def client(web):
    return falcon.testing.TestClient(create_app(web))


def assert_error(result, status, code):
    assert result.status_code == status, result.text
    assert result.headers["content-type"].startswith("application/json")
    error = result.json["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return error


# -- queries and views ---------------------------------------------------------

def test_query_get_passes_the_query_string(client, web):
    result = client.simulate_get("/query/course_grades", query_string="limit=3&tag=a&tag=b")
    assert result.status_code == 200
    assert result.json == {"endpoint": "course_grades", "params": {"limit": "3", "tag": ["a", "b"]}}
    assert web.calls == [("query", "course_grades", {"limit": "3", "tag": ["a", "b"]})]


def test_query_by_alias(client, web):
    result = client.simulate_get("/query/g.v2")
    assert result.status_code == 200
    assert result.json["endpoint"] == "course_grades"
    assert web.calls[-1][:2] == ("query", "g.v2")


def test_query_post_merges_the_json_body(client, web):
    result = client.simulate_post("/query/echo", query_string="a=1", json={"b": [1, 2], "c": None})
    assert result.status_code == 200
    assert result.json["params"] == {"a": "1", "b": [1, 2], "c": None}


def test_query_post_with_empty_body(client):
    result = client.simulate_post("/query/echo", query_string="a=1")
    assert result.status_code == 200
    assert result.json["params"] == {"a": "1"}


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]"])
def test_query_post_with_a_bad_body_is_400(client, web, body):
    result = client.simulate_post("/query/echo", body=body, headers={"content-type": "application/json"})
    assert result.status_code == 400
    assert web.calls == []


def test_view_is_html(client, web):
    result = client.simulate_get("/view/grade_chart", query_string="limit=2")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/html")
    assert result.text == '<p>grade_chart {"limit": "2"}</p>'


def test_unknown_endpoint_is_404(client):
    error = assert_error(client.simulate_get("/query/nothing_here"), 404, "not_found")
    assert "nothing_here" in error["message"]


@pytest.mark.parametrize("path, status, code", [
    ("/view/no_such_view", 404, "not_found"),
    ("/view/course_grades", 404, "not_found"),  # a query, not a view
])
def test_view_errors_are_json(client, path, status, code):
    assert_error(client.simulate_get(path), status, code)


def test_invalid_json_query_body_is_a_json_error(client):
    result = client.simulate_post("/query/echo", body=b"{bad", headers={"content-type": "application/json"})
    assert_error(result, 400, "http")


def test_bad_parameter_is_400_naming_it(client):
    error = assert_error(client.simulate_get("/query/needs"), 400, "bad_parameter")
    assert error["param"] == "user"
    assert "'user'" in error["message"]


def test_module_raised_is_500(client):
    assert_error(client.simulate_get("/query/fails"), 500, "module_error")


def test_module_crashed_is_502(client):
    assert_error(client.simulate_get("/query/crashes"), 502, "crashed")


def test_module_not_running_is_503(client):
    error = assert_error(client.simulate_get("/query/broken_query"), 503, "not_running")
    assert "crashloop" in error["message"]


def test_timeout_is_504(client):
    assert_error(client.simulate_get("/query/slow"), 504, "timeout")


def test_unexpected_exception_is_500_without_details(client, caplog):
    with caplog.at_level(logging.ERROR, logger="insights.http"):
        result = client.simulate_get("/query/bug")
    assert_error(result, 500, "internal")
    assert SECRET_DETAIL not in result.text
    assert "Traceback" not in result.text and "RuntimeError" not in result.text
    # the traceback goes to the log instead
    assert any(record.exc_info and SECRET_DETAIL in str(record.exc_info[1])
               for record in caplog.records)


def test_query_body_over_the_limit_is_413(tmp_path):
    client = falcon.testing.TestClient(create_app(FakeWeb(tmp_path, max_body_mb=0.001)))
    big = json.dumps({"x": "y" * 2000}).encode()
    assert_error(client.simulate_post("/query/echo", body=big,
                                      headers={"content-type": "application/json"}), 413, "too_large")
    small = json.dumps({"x": "y"}).encode()
    assert client.simulate_post("/query/echo", body=small).status_code == 200


# -- events --------------------------------------------------------------------

EVENT = {"username": "bob", "event_type": "play_video"}


def test_post_event_object(client, web):
    result = client.simulate_post("/event", json=EVENT)
    assert result.status_code == 202
    assert result.json == {"accepted": 1, "duplicates": 0, "ids": ["id0"]}
    assert web.appended == [[EVENT]]


@pytest.mark.parametrize("document", [
    [EVENT, {"username": "amy"}],
    json.dumps([EVENT, {"username": "amy"}]),
    [json.dumps(EVENT), json.dumps({"username": "amy"})],
])
def test_post_event_list_forms(client, web, document):
    result = client.simulate_post("/event", json=document)
    assert result.status_code == 202
    assert result.json["accepted"] == 2
    assert web.appended == [[EVENT, {"username": "amy"}]]


def http_handler_fields(message):
    record = logging.LogRecord("tracking", logging.INFO, __file__, 1, message, None, None)
    return dict(record.__dict__)


def test_post_event_http_handler_form(client, web):
    body = urlencode(http_handler_fields(json.dumps(EVENT)))
    result = client.simulate_post("/event", body=body,
                                  headers={"content-type": "application/x-www-form-urlencoded"})
    assert result.status_code == 202
    assert web.appended == [[EVENT]]


def test_get_event_http_handler_query_string(client, web):
    result = client.simulate_get("/event", query_string=urlencode(http_handler_fields(json.dumps(EVENT))))
    assert result.status_code == 202
    assert result.json["accepted"] == 1
    assert web.appended == [[EVENT]]


def test_get_event_without_fields_is_400(client, web):
    assert_error(client.simulate_get("/event"), 400, "bad_event")
    assert web.appended == []


def test_bad_batch_is_400_with_index_and_nothing_stored(client, web):
    result = client.simulate_post("/event", json=[EVENT, EVENT, 7])
    error = assert_error(result, 400, "bad_event")
    assert error["index"] == 2
    assert web.appended == []


@pytest.mark.parametrize("body", [b"", b"   ", b"[]", b"42", b"{oops", b"\xff\xfe"])
def test_bad_bodies_are_400(client, web, body):
    result = client.simulate_post("/event", body=body, headers={"content-type": "application/json"})
    error = assert_error(result, 400, "bad_event")
    assert error["index"] is None
    assert web.appended == []


def test_event_body_over_the_limit_is_413(tmp_path):
    web = FakeWeb(tmp_path, max_body_mb=0.001)
    client = falcon.testing.TestClient(create_app(web))
    events = [dict(EVENT, n=i) for i in range(100)]
    assert len(json.dumps(events)) > 0.001 * 1024 * 1024
    assert_error(client.simulate_post("/event", json=events), 413, "too_large")
    assert web.appended == []
    assert client.simulate_post("/event", json=EVENT).status_code == 202


def test_an_unreachable_store_is_503_without_its_details(client, web):
    web.store_down = True
    result = client.simulate_post("/event", json=EVENT)
    assert_error(result, 503, "store_unavailable")
    assert SECRET_DETAIL not in result.text and "seq" not in result.text


# -- checks hostd makes itself before a call ----------------------------------------

@pytest.mark.parametrize("query_string, body", [
    ("limit=1e999", None), ("limit=nan", None), ("limit=2.5", None), (None, b'{"limit": 1e999}'),
    (None, b'{"limit": NaN}'), (None, b'{"limit": 99999999999999999999}'), (None, b'{"limit": "\\udc00"}'),
])
def test_an_unconvertible_parameter_never_reaches_the_module(client, web, query_string, body):
    result = client.simulate_request("POST" if body else "GET", "/query/course_grades", query_string=query_string,
                                     body=body, headers={"content-type": "application/json"})
    error = assert_error(result, 400, "bad_parameter")
    assert error["param"] == "limit" and "'limit'" in error["message"]
    assert web.calls == []


def test_a_missing_parameter_never_reaches_the_module(client, web):
    assert assert_error(client.simulate_get("/view/user_card"), 400, "bad_parameter")["param"] == "user"
    assert web.calls == []


def test_an_unknown_name_names_the_modules_that_failed_to_load(client, web):
    assert "failed" not in assert_error(client.simulate_get("/query/nothing_here"), 404, "not_found")["message"]
    failed = {"name": "zz_failed", "state": "failed", "pid": None, "manifest": {}, "endpoints": []}
    web._snapshot = Snapshot({"modules": {**TABLE["modules"], "zz_failed": failed, "aa_failed": failed}})
    message = assert_error(client.simulate_get("/query/nothing_here"), 404, "not_found")["message"]
    assert message == ("no query named 'nothing_here'; modules failed to load: aa_failed, zz_failed"
                       " \N{EM DASH} it may be in one of them")


def test_a_body_shorter_than_its_content_length_is_400(client, web):
    result = client.simulate_post("/event", body=b'{"a": 1}', headers={"content-length": "50"})
    assert_error(result, 400, "bad_body")
    assert web.appended == []


# -- requests forged by web pages -----------------------------------------------------

@pytest.mark.parametrize("method, path", [("POST", "/event"), ("POST", "/xapi/statements"),
                                          ("POST", "/modules/grades/dead_letters/retry")])
@pytest.mark.parametrize("headers", [{"Origin": "http://evil.example"}, {"Origin": "null"},
                                     {"Origin": "http://localhost:8001"}, {"Sec-Fetch-Site": "cross-site"}])
def test_state_changing_requests_from_other_origins_are_403(client, web, method, path, headers):
    result = client.simulate_request(method, path, json=EVENT, headers=headers)
    assert_error(result, 403, "foreign_origin")
    assert web.appended == []


def test_get_event_from_another_site_is_403(client, web):
    query = urlencode(http_handler_fields(json.dumps(EVENT)))
    assert_error(client.simulate_get("/event", query_string=query, headers={"Sec-Fetch-Site": "cross-site"}),
                 403, "foreign_origin")
    assert web.appended == []


@pytest.mark.parametrize("headers", [{}, {"Origin": "http://localhost"}, {"Origin": "http://127.0.0.1:80"},
                                     {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}])
def test_own_pages_and_programs_may_post_events(client, web, headers):
    assert client.simulate_post("/event", json=EVENT, headers=headers).status_code == 202


def test_reading_routes_take_any_origin(client):
    assert client.simulate_post("/query/echo", json={}, headers={"Origin": "http://evil.example"}).status_code == 200


# -- schema, dashboard, status ----------------------------------------------------

def test_schema_json_lists_aliases_as_entries(client):
    result = client.simulate_get("/schema")
    assert result.status_code == 200
    entries = {(e["class"], e["name"]): e for e in result.json}
    assert set(entries) == {
        ("query", "course_grades"), ("query", "grades_alias"), ("query", "g.v2"),
        ("view", "grade_chart"), ("view", "user_card"), ("query", "broken_query"),
        ("query", "echo"), ("query", "fails"), ("query", "crashes"), ("query", "slow"),
        ("query", "needs"), ("query", "bug"),
    }
    alias = entries[("query", "grades_alias")]
    assert alias["module"] == "grades"
    assert alias["params"] == [LIMIT]
    assert alias["category"] == "limit"
    assert alias["doc"] == "Grades of a course."
    assert entries[("view", "user_card")]["params"] == [USER]
    assert all(e["class"] != "handler" for e in result.json)


def test_schema_html(client):
    result = client.simulate_get("/schema", params={"f": "html"})
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/html")
    assert "grades_alias" in result.text
    assert 'href="/query/course_grades"' in result.text
    assert "limit: int = 10" in result.text
    assert "<b>of grades</b>" not in result.text
    assert "&lt;b&gt;of grades&lt;/b&gt;" in result.text


TRACEBACK = """Traceback (most recent call last):
  File "/modules/broken/__init__.py", line 3, in <module>
    import missing_<b>thing
ModuleNotFoundError: No module named 'missing_<script>x</script>'
"""

PARAM_KINDS = [
    {"name": "course", "type": "str", "required": True, "default": None},
    {"name": "weeks", "type": "int", "required": False, "default": 2},
    {"name": "ratio", "type": "float", "required": False, "default": 0.5},
    {"name": "detailed", "type": "bool", "required": False, "default": True},
    {"name": "tags", "type": "list[str]", "required": False, "default": ["a", "b"]},
]


class DashboardWeb(FakeWeb):
    """The fake web context with a table and a live status of its own, for the dashboard."""

    def __init__(self, tmp_path, status=None):
        super().__init__(tmp_path)
        table = {"modules": {
            **TABLE["modules"],
            "broken": {**TABLE["modules"]["broken"], "last_error": "stale error from the table"},
            "kinds": {"name": "kinds", "state": "running", "restarts": 0, "pid": 104, "manifest": {},
                      "limits": {"call_timeout_s": 7.0},
                      "endpoints": [endpoint("view", "every_kind", "kinds", PARAM_KINDS)]}}}
        self._snapshot = Snapshot(table)
        self.status = status if status is not None else {
            "grades": {"state": "running", "pid": 101, "restarts": 0, "last_error": None, "lag": 12,
                       "handled": 340, "dead_letters": 0},
            "broken": {"state": "crashloop", "pid": None, "restarts": 5, "last_error": TRACEBACK, "lag": 3,
                       "handled": 0, "dead_letters": 4},
        }

    def module_status(self):
        if isinstance(self.status, Exception):
            raise self.status
        return self.status


def dashboard(tmp_path, query_string="", status=None):
    """:returns: the answer to ``GET /`` over a :class:`DashboardWeb`."""
    client = falcon.testing.TestClient(create_app(DashboardWeb(tmp_path, status)))
    return client.simulate_get("/", query_string=query_string)


def section(html, module):
    """:returns: the HTML of one module's section of the dashboard."""
    start = html.index(f'id="module-{module}"')
    return html[start:html.index("</section>", start)]


def test_dashboard_lists_modules_with_their_state_and_endpoints(client):
    result = client.simulate_get("/")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/html")
    html = result.text
    for name in ("grades", "broken", "misc"):
        assert f'id="module-{name}"' in html
    assert 'data-state="crashloop"' in section(html, "broken")
    assert "count_grades" in section(html, "grades")  # handlers are listed
    assert 'href="/query/course_grades"' in section(html, "grades")  # queries are linked
    assert '<a class="view-link" href="/view/grade_chart"' in html  # and each view


def test_dashboard_shows_lag_dead_letters_and_the_last_errors_summary(tmp_path):
    broken = section(dashboard(tmp_path).text, "broken")
    assert '<dd class="lag">3</dd>' in broken
    assert 'href="/modules/broken/dead_letters">4</a>' in broken
    summary = broken[broken.index("<summary>"):broken.index("</summary>")]
    assert "ModuleNotFoundError: No module named" in summary
    assert "Traceback" not in summary  # the summary is the last line...
    details = broken[broken.index("<details"):broken.index("</details>")]
    assert "Traceback (most recent call last):" in details  # ...and the whole text is one click away
    assert "stale error from the table" not in broken  # the live status wins over the table
    assert '<dd class="lag">12</dd>' in section(dashboard(tmp_path).text, "grades")


def test_dashboard_escapes_error_texts_and_descriptions(tmp_path):
    html = dashboard(tmp_path).text
    assert "<script>" not in html.replace('<script src="/assets/dashboard.js" defer></script>', "")
    assert "&lt;script&gt;x&lt;/script&gt;" in html
    assert "import missing_&lt;b&gt;thing" in html
    assert "&lt;script&gt;alert(" in html
    assert "<b>of grades</b>" not in html


def test_dashboard_without_live_status_shows_the_table(tmp_path):
    result = dashboard(tmp_path, status=ModuleTimeout("hostd did not answer status in time"))
    assert result.status_code == 200
    assert "Live status unavailable (hostd did not answer status in time)" in result.text
    broken = section(result.text, "broken")
    assert "stale error from the table" in broken and '<dd class="lag">?</dd>' in broken


def test_views_without_required_parameters_load_at_once_others_wait(tmp_path):
    html = dashboard(tmp_path).text
    chart = html[html.index('id="view-grade_chart"'):]
    assert chart[:chart.index(">")].endswith("data-autoload")
    card = html[html.index('id="view-user_card"'):]
    assert "data-autoload" not in card[:card.index(">")]


def test_each_parameter_gets_an_input_of_its_type(tmp_path):
    html = dashboard(tmp_path).text
    form = html[html.index('id="view-every_kind"'):]
    form = form[form.index("<form"):form.index("</form>")]
    params = {m.group(1): m.group(0) for m in re.finditer(r'<div class="param" data-param="(\w+)".*?</div>', form, re.S)}
    assert set(params) == {"course", "weeks", "ratio", "detailed", "tags"}
    assert 'type="text"' in params["course"] and " required" in params["course"]
    assert 'title="required">*</abbr>' in params["course"]
    assert 'type="number"' in params["weeks"] and 'step="1"' in params["weeks"] and 'value="2"' in params["weeks"]
    assert 'type="number"' in params["ratio"] and 'step="any"' in params["ratio"]
    assert 'type="checkbox"' in params["detailed"] and " checked" in params["detailed"]
    assert params["tags"].count("<input") == 2 and 'value="a"' in params["tags"] and 'class="add-item"' in params["tags"]
    for name in ("weeks", "ratio", "detailed", "tags"):
        assert "required" not in params[name], name


def test_each_frame_waits_its_modules_call_limit_and_a_grace(tmp_path):
    html = dashboard(tmp_path).text
    assert re.search(r'id="view-every_kind"[^>]*data-timeout-s="12.0"', html)
    assert re.search(r'id="view-grade_chart"[^>]*data-timeout-s="35.0"', html)  # the default limit
    html = dashboard(tmp_path, "view_timeout_s=2.5").text
    assert re.search(r'id="view-every_kind"[^>]*data-timeout-s="2.5"', html)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "3601", "soon"])
def test_a_bad_view_timeout_is_400(tmp_path, value):
    assert_error(dashboard(tmp_path, f"view_timeout_s={value}"), 400, "http")


def test_dashboard_without_modules(tmp_path):
    web = FakeWeb(tmp_path)
    web._snapshot = Snapshot({})
    html = falcon.testing.TestClient(create_app(web)).simulate_get("/").text
    assert "No modules are loaded." in html


@pytest.mark.parametrize("name, content_type, needle", [
    ("dashboard.js", "text/javascript", "function loadView"),
    ("dashboard.css", "text/css", ".error-box"),
])
def test_the_dashboards_assets_are_served(client, name, content_type, needle):
    result = client.simulate_get(f"/assets/{name}")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith(content_type)
    assert needle in result.text
    assert f'"/assets/{name}"' in client.simulate_get("/").text


@pytest.mark.parametrize("name", ["missing.js", "..%2Fdashboard.py", "__init__.py", "dashboard.js%00"])
def test_only_the_dashboards_assets_are_served(client, name):
    assert_error(client.simulate_get(f"/assets/{name}"), 404, "http")


def test_error_summary_is_the_last_line():
    assert error_summary(TRACEBACK) == "ModuleNotFoundError: No module named 'missing_<script>x</script>'"
    assert error_summary("not ready after 30 s") == "not ready after 30 s"
    assert error_summary(None) == "" and error_summary("\n \n") == ""
    assert len(error_summary("x" * 1000, limit=50)) == 50


def test_modules(client):
    result = client.simulate_get("/modules")
    assert result.status_code == 200
    assert result.json == {"grades": {"state": "running", "pid": 101}, "broken": {"state": "crashloop"}}


def test_healthz(client):
    result = client.simulate_get("/healthz")
    assert result.status_code == 200
    assert result.json == {"status": "ok", "node": "node-a", "modules": {"running": 2, "crashloop": 1}}


# -- files -----------------------------------------------------------------------

def write_module_file(web, module, name, data: bytes):
    store = FileStore(web.module_fs_root(module), module, web.fs_key(module))
    with store.open(name, "wb") as handle:
        handle.write(data)
    return store


def test_signed_file_is_served(client, web):
    write_module_file(web, "grades", "plots/chart.png", b"\x89PNG data")
    expires = int(time.time()) + 600
    sig = sign_path(web.fs_key("grades"), "grades", "plots/chart.png", expires)
    result = client.simulate_get("/fs/grades/plots/chart.png", params={"expires": expires, "sig": sig})
    assert result.status_code == 200
    assert result.content == b"\x89PNG data"
    assert result.headers["content-type"] == "image/png"


def test_url_from_the_file_store_is_served(client, web):
    store = write_module_file(web, "grades", "report.csv", b"a,b\n1,2\n")
    url = store.get_url("report.csv")
    path, query = url.split("?", 1)
    result = client.simulate_get(path, query_string=query)
    assert result.status_code == 200
    assert result.text == "a,b\n1,2\n"


def test_bad_or_expired_signature_is_403(client, web):
    write_module_file(web, "grades", "r.txt", b"data")
    key = web.fs_key("grades")
    expires = int(time.time()) + 600
    good = sign_path(key, "grades", "r.txt", expires)
    cases = [
        {"expires": expires, "sig": "0" * 64},
        {"expires": expires + 1, "sig": good},
        {"expires": expires},
        {},
        {"expires": int(time.time()) - 5, "sig": sign_path(key, "grades", "r.txt", int(time.time()) - 5)},
        # signed by another module's key
        {"expires": expires, "sig": sign_path(web.fs_key("misc"), "grades", "r.txt", expires)},
    ]
    for params in cases:
        result = client.simulate_get("/fs/grades/r.txt", params=params)
        assert_error(result, 403, "forbidden")
        assert b"data" not in result.content
    assert client.simulate_get("/fs/grades/r.txt", params={"expires": expires, "sig": good}).status_code == 200


def test_signature_for_one_module_does_not_open_another(client, web):
    write_module_file(web, "misc", "r.txt", b"misc data")
    expires = int(time.time()) + 600
    sig = sign_path(web.fs_key("grades"), "grades", "r.txt", expires)
    result = client.simulate_get("/fs/misc/r.txt", params={"expires": expires, "sig": sig})
    assert result.status_code == 403


def test_signed_missing_file_is_404(client, web):
    expires = int(time.time()) + 600
    sig = sign_path(web.fs_key("grades"), "grades", "none.txt", expires)
    result = client.simulate_get("/fs/grades/none.txt", params={"expires": expires, "sig": sig})
    assert result.status_code == 404


@pytest.mark.parametrize("name", ["what?.txt", "100%41.txt"])
def test_url_of_a_file_with_url_special_characters_is_served(client, web, name):
    store = write_module_file(web, "grades", name, b"special")
    parts = urlsplit(store.get_url(name))
    result = client.simulate_get(parts.path, query_string=parts.query)
    assert result.status_code == 200
    assert result.content == b"special"
