"""Tokens and policies in-process: the pure rules, the middleware, the login form, the bind refusal.

Two tokens, as the configuration gives them: an instructor fixed to one course who
may use some names, and an admin. The app is the real factory over the fake web
context of ``test_app``.
"""
from __future__ import annotations

import hashlib

import falcon.testing
import pytest
from click.testing import CliRunner

from hostd.app import create_app
from hostd.auth import COOKIE, ROUTE_SCOPES, Authenticator, check_bind
from hostd.config import Config, ConfigError, load_config
from hostd.openapi import app_routes
from hostd.policy import OPEN, Policy, token_entry
from hostd.tokens import new_token, token
from test_app import FakeWeb, assert_error

pytestmark = pytest.mark.timeout(60)

INSTRUCTOR_TOKEN = "instructor-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdefghij"
INSTRUCTOR = {"name": "instructor-6002x", "token_sha256": hashlib.sha256(INSTRUCTOR_TOKEN.encode()).hexdigest(),
              "scopes": ["views", "queries"], "default": "deny",
              "allow": ["course_grades", "grade_chart", "echo", "needs", "fails"], "deny": ["fails"],
              "fix": {"limit": 5}}
ADMIN = {"name": "admin", "token": ADMIN_TOKEN, "scopes": ["admin", "events:write", "views", "queries"],
         "default": "allow", "deny": ["g.v2"]}  # an alias: course_grades and grades_alias go with it


def tokens():
    return [token_entry(INSTRUCTOR, "instructor"), token_entry(ADMIN, "admin")]


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def make_client(tmp_path, required="always", bind="127.0.0.1"):
    web = FakeWeb(tmp_path)
    web.config.update({"auth.required": required, "auth.tokens": tokens(), "server.bind": bind})
    return falcon.testing.TestClient(create_app(web)), web


@pytest.fixture
def secured(tmp_path):
    return make_client(tmp_path)


# -- the rules, as pure functions ----------------------------------------------------------

def test_a_denied_name_hides_its_aliases_and_allow_is_by_name():
    policy = Policy(default="allow", deny=frozenset({"g.v2"}))
    assert not policy.allows("query", "course_grades", ["course_grades", "g.v2"])
    assert policy.allows("query", "echo", ["echo"])
    listed = Policy(default="deny", allow=frozenset({"course_grades"}))
    assert listed.allows("query", "course_grades", ["course_grades", "g.v2"])
    assert not listed.allows("query", "g.v2", ["course_grades", "g.v2"])
    assert not listed.allows("query", "echo")


def test_scopes_hide_a_kind_and_no_scope_list_means_all():
    queries_only = Policy(default="allow", scopes=frozenset({"queries"}))
    assert queries_only.allows("query", "x") and not queries_only.allows("view", "x")
    assert not queries_only.has_scope("admin") and OPEN.has_scope("admin") and OPEN.allows("view", "x")


def test_fixed_parameters_win_and_vanish_from_entries():
    policy = Policy(default="allow", fix={"course": "6.002x"})
    assert policy.force({"course": "other", "limit": "3"}) == {"course": "6.002x", "limit": "3"}
    assert policy.force({}) == {"course": "6.002x"}
    entry = {"class": "query", "name": "q", "params": [{"name": "course"}, {"name": "limit"}], "category": "course+limit"}
    assert policy.entry(entry)["params"] == [{"name": "limit"}] and policy.entry(entry)["category"] == "limit"


def test_identify_knows_configured_tokens_only():
    config = Config({"auth.required": "always", "auth.tokens": tokens(), "server.bind": "127.0.0.1"})
    authenticator = Authenticator(config)
    assert authenticator.identify(INSTRUCTOR_TOKEN).name == "instructor-6002x"
    assert authenticator.identify(ADMIN_TOKEN).fix == {}
    assert authenticator.identify(ADMIN_TOKEN[:-1]) is None and authenticator.identify("") is None


# -- 401, 403 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("headers, challenge", [
    ({}, 'Bearer realm="insights"'),
    (bearer("not-a-token"), 'Bearer realm="insights", error="invalid_token"'),
    ({"Authorization": "Bearer"}, 'Bearer realm="insights", error="invalid_token"'),
    ({"Authorization": f"Basic {ADMIN_TOKEN}"}, 'Bearer realm="insights"'),  # not a bearer token: none
])
def test_no_token_or_an_unknown_one_is_401_with_a_challenge(secured, headers, challenge):
    client, web = secured
    for method, path in (("GET", "/query/echo"), ("GET", "/schema"), ("GET", "/modules"), ("POST", "/event")):
        result = client.simulate_request(method, path, headers=headers, json={})
        assert_error(result, 401, "unauthorized")
        assert result.headers["www-authenticate"] == challenge
    assert web.calls == [] and web.appended == []


def test_a_missing_scope_is_403(secured):
    client, web = secured
    result = client.simulate_get("/modules", headers=bearer(INSTRUCTOR_TOKEN))
    error = assert_error(result, 403, "forbidden")
    assert "'admin'" in error["message"] and "instructor-6002x" in error["message"]
    assert 'error="insufficient_scope"' in result.headers["www-authenticate"]
    assert_error(client.simulate_post("/event", json={"a": 1}, headers=bearer(INSTRUCTOR_TOKEN)), 403, "forbidden")
    assert web.appended == []
    assert client.simulate_get("/modules", headers=bearer(ADMIN_TOKEN)).status_code == 200
    assert client.simulate_post("/event", json={"a": 1}, headers=bearer(ADMIN_TOKEN)).status_code == 202


def test_public_routes_need_no_token(secured):
    client, _ = secured
    assert client.simulate_get("/healthz").status_code == 200
    assert client.simulate_get("/xapi/about").status_code == 200
    assert client.simulate_get("/login").status_code == 200
    # a signed URL carries its own proof: no token, and the signature still decides
    assert_error(client.simulate_get("/fs/grades/a.csv"), 403, "forbidden")


def test_every_route_is_classified_and_the_rest_are_admin_routes(secured):
    client, _ = secured
    unlisted = [template for template, _ in app_routes(client.app) if template not in ROUTE_SCOPES]
    assert unlisted and all(t.startswith("/modules") for t in unlisted), unlisted


# -- the policy of a token -----------------------------------------------------------------

def test_fixed_parameters_are_forced_in_the_query_string_and_the_body(secured):
    client, web = secured
    client.simulate_get("/query/course_grades", query_string="limit=50&x=1", headers=bearer(INSTRUCTOR_TOKEN))
    client.simulate_post("/query/course_grades", json={"limit": 50}, headers=bearer(INSTRUCTOR_TOKEN))
    client.simulate_get("/view/grade_chart", query_string="limit=1", headers=bearer(INSTRUCTOR_TOKEN))
    assert web.calls == [("query", "course_grades", {"limit": 5, "x": "1"}),
                         ("query", "course_grades", {"limit": 5}), ("view", "grade_chart", {"limit": 5})]
    client.simulate_post("/query/echo", json={"limit": 50}, headers=bearer(ADMIN_TOKEN))
    assert web.calls[-1] == ("query", "echo", {"limit": 50})


def test_a_fixed_parameter_is_checked_like_a_sent_one(tmp_path):
    client, web = make_client(tmp_path)
    web.config["auth.tokens"] = [token_entry({**INSTRUCTOR, "fix": {"limit": "many"}}, "t")]
    client = falcon.testing.TestClient(create_app(web))
    error = assert_error(client.simulate_get("/query/course_grades", headers=bearer(INSTRUCTOR_TOKEN)),
                         400, "bad_parameter")
    assert error["param"] == "limit" and web.calls == []


@pytest.mark.parametrize("token, kind, name", [
    (INSTRUCTOR_TOKEN, "query", "g.v2"), (INSTRUCTOR_TOKEN, "query", "fails"), (INSTRUCTOR_TOKEN, "view", "user_card"),
    (ADMIN_TOKEN, "query", "g.v2"), (ADMIN_TOKEN, "query", "course_grades"), (ADMIN_TOKEN, "query", "grades_alias"),
])
def test_a_denied_name_is_404_exactly_like_an_unknown_one(secured, token, kind, name):
    client, web = secured
    denied = client.simulate_get(f"/{kind}/{name}", headers=bearer(token))
    unknown = client.simulate_get(f"/{kind}/no_such_name", headers=bearer(token))
    assert_error(denied, 404, "not_found")
    assert denied.json["error"]["message"] == unknown.json["error"]["message"].replace("no_such_name", name)
    assert web.calls == []


def test_a_denied_name_of_a_module_that_is_down_is_404_not_503(secured):
    client, _ = secured
    assert_error(client.simulate_get("/query/broken_query", headers=bearer(INSTRUCTOR_TOKEN)), 404, "not_found")
    assert_error(client.simulate_get("/query/broken_query", headers=bearer(ADMIN_TOKEN)), 503, "not_running")


def test_the_schema_shows_what_the_token_may_use_without_fixed_parameters(secured):
    client, _ = secured
    entries = client.simulate_get("/schema", headers=bearer(INSTRUCTOR_TOKEN)).json
    assert sorted((e["class"], e["name"]) for e in entries) == [
        ("query", "course_grades"), ("query", "echo"), ("query", "needs"), ("view", "grade_chart")]
    assert all(p["name"] != "limit" for e in entries for p in e["params"])
    admin = {e["name"] for e in client.simulate_get("/schema", headers=bearer(ADMIN_TOKEN)).json}
    assert {"user_card", "fails", "echo"} <= admin and not {"g.v2", "course_grades", "grades_alias"} & admin
    page = client.simulate_get("/schema", params={"f": "html"}, headers=bearer(INSTRUCTOR_TOKEN)).text
    assert "grade_chart" in page and "user_card" not in page


def test_the_openapi_document_follows_the_token(secured):
    client, _ = secured
    paths = client.simulate_get("/openapi.json", headers=bearer(INSTRUCTOR_TOKEN)).json["paths"]
    assert {"/view/grade_chart", "/query/echo", "/query/course_grades"} <= set(paths)
    assert "/view/user_card" not in paths and "/query/g.v2" not in paths and "/query/grades_alias" not in paths
    assert [p["name"] for p in paths["/view/grade_chart"]["get"]["parameters"]] == []
    admin = client.simulate_get("/openapi.json", headers=bearer(ADMIN_TOKEN)).json["paths"]
    assert [p["name"] for p in admin["/view/grade_chart"]["get"]["parameters"]] == ["limit"]


# -- loopback without auth: a presented token still applies -------------------------------------

def test_on_loopback_without_a_token_everything_is_open_but_a_token_is_applied(tmp_path):
    client, web = make_client(tmp_path, required="auto")
    assert client.simulate_get("/modules").status_code == 200
    assert client.simulate_get("/query/g.v2").status_code == 200
    assert_error(client.simulate_get("/query/g.v2", headers=bearer(INSTRUCTOR_TOKEN)), 404, "not_found")
    assert_error(client.simulate_get("/modules", headers=bearer(INSTRUCTOR_TOKEN)), 403, "forbidden")
    assert_error(client.simulate_get("/modules", headers=bearer("guessed")), 401, "unauthorized")
    assert_error(client.simulate_get("/modules", headers={"Cookie": f"{COOKIE}=guessed"}), 401, "unauthorized")


def test_auto_requires_a_token_beyond_loopback_and_never_does_not(tmp_path):
    client, _ = make_client(tmp_path, required="auto", bind="0.0.0.0")
    assert_error(client.simulate_get("/query/echo"), 401, "unauthorized")
    client, _ = make_client(tmp_path, required="never", bind="0.0.0.0")
    assert client.simulate_get("/query/echo").status_code == 200
    # a proxy in front that checks callers itself may pass its own Authorization on
    assert client.simulate_get("/query/echo", headers={"Authorization": "Basic dTpw"}).status_code == 200
    assert_error(client.simulate_get("/query/echo", headers=bearer("guessed")), 401, "unauthorized")


def test_foreign_origins_are_still_refused_with_or_without_a_token(tmp_path):
    client, web = make_client(tmp_path, required="auto")
    for headers in ({}, bearer(ADMIN_TOKEN)):
        result = client.simulate_post("/event", json={"a": 1}, headers={"Origin": "http://evil.example", **headers})
        assert_error(result, 403, "foreign_origin")
    for path in ("/modules/grades/rebuild", "/modules/grades/cron/nightly/run", "/login"):
        result = client.simulate_post(path, headers={"Origin": "http://evil.example", **bearer(ADMIN_TOKEN)})
        assert_error(result, 403, "foreign_origin")
    assert web.appended == []


# -- the dashboard's login ------------------------------------------------------------------------

def _cookie_header(result):
    return result.headers["set-cookie"]


def test_the_dashboard_sends_people_to_the_login_form(secured):
    client, _ = secured
    result = client.simulate_get("/")
    assert result.status_code == 303 and result.headers["location"] == "/login"
    bad_cookie = client.simulate_get("/", headers={"Cookie": f"{COOKIE}=guessed"})
    assert bad_cookie.status_code == 303 and bad_cookie.headers["location"] == "/login"
    form = client.simulate_get("/login")
    assert form.status_code == 200 and 'name="token"' in form.text and 'method="post"' in form.text


def test_login_sets_a_strict_http_only_cookie_that_works_like_the_token(secured):
    client, web = secured
    result = client.simulate_post("/login", body=f"token={INSTRUCTOR_TOKEN}",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert result.status_code == 303 and result.headers["location"] == "/"
    cookie = result.cookies[COOKIE]
    assert cookie.value == INSTRUCTOR_TOKEN and cookie.http_only and cookie.same_site == "Strict"
    assert not cookie.secure and cookie.path == "/"  # plain HTTP: a Secure cookie would never come back
    jar = {"Cookie": f"{COOKIE}={cookie.value}"}
    page = client.simulate_get("/", headers=jar)
    assert page.status_code == 200 and "grade_chart" in page.text and "user_card" not in page.text
    assert 'id="module-broken"' not in page.text  # nothing there for this token
    assert client.simulate_get("/view/grade_chart", headers=jar).status_code == 200
    assert web.calls[-1] == ("view", "grade_chart", {"limit": 5})
    assert_error(client.simulate_get("/modules", headers=jar), 403, "forbidden")
    # the header wins over the cookie
    assert client.simulate_get("/modules", headers={**jar, **bearer(ADMIN_TOKEN)}).status_code == 200


def test_login_with_an_unknown_token_shows_the_form_again(secured):
    client, _ = secured
    result = client.simulate_post("/login", body="token=guessed",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert result.status_code == 401 and "not known" in result.text and 'name="token"' in result.text
    assert "set-cookie" not in result.headers


def test_the_cookie_is_secure_over_https(secured):
    client, _ = secured
    result = client.simulate_post("/login", body=f"token={ADMIN_TOKEN}", protocol="https",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert result.status_code == 303 and result.cookies[COOKIE].secure


# -- the bind refusal ----------------------------------------------------------------------------

@pytest.mark.parametrize("bind, required, refused", [
    ("0.0.0.0", "auto", True), ("192.0.2.1", "auto", True), ("0.0.0.0", "never", False),
    ("127.0.0.1", "auto", False), ("::1", "auto", False), ("localhost", "auto", False),
    ("127.0.0.1", "always", True), ("0.0.0.0", "always", True),
])
def test_serving_everyone_or_no_one_is_refused(tmp_path, bind, required, refused):
    config = load_config(None, {"server.bind": bind, "auth.required": required, "storage.data_dir": str(tmp_path)})
    if refused:
        with pytest.raises(ConfigError, match=r"\[auth\]"):
            check_bind(config)
    else:
        check_bind(config)
    with_tokens = Config({**config.as_dict(), "auth.tokens": tokens()})
    check_bind(with_tokens)  # with a token, any address and mode is fine


# -- hostd token new ---------------------------------------------------------------------------------

def test_a_new_token_gives_a_table_hostd_accepts(tmp_path):
    secret, block = new_token("instructor-6002x", ["views", "queries"], allow=["a", "b"], fix={"course": 'x "y"'})
    path = tmp_path / "hostd.toml"
    path.write_text(block, encoding="utf-8")
    (entry,) = load_config(path)["auth.tokens"]
    assert entry["token_sha256"] == hashlib.sha256(secret.encode()).hexdigest() and secret not in block
    assert entry["default"] == "deny" and entry["allow"] == ["a", "b"] and entry["fix"] == {"course": 'x "y"'}
    assert new_token("admin", ["admin"])[1].count('default = "allow"') == 1  # no allow list: all it may reach
    assert new_token("a", ["views"])[0] != new_token("a", ["views"])[0]


@pytest.mark.parametrize("args, message", [
    (["x", "--scopes", "view"], "unknown scope"),
    (["bad name", "--scopes", "views"], "token.name"),
    (["x", "--scopes", "views", "--fix", "course"], "PARAM=VALUE"),
])
def test_token_new_refuses_what_hostd_would(args, message):
    result = CliRunner().invoke(token, ["new", *args])
    assert result.exit_code == 2 and message in result.output
