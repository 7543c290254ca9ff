"""Tokens and policies through a real ``hostd serve``.

The tokens come from ``hostd token new``; the configuration says ``[auth]
required = "always"`` and holds two of them: an instructor fixed to one course,
who may use ``course_count`` and ``course_page`` only, and an admin.
"""
from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from hostd.client import Forbidden, Insights, NotFound
from running_hostd import free_port, start_daemon, stop_daemon

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MODULES = Path(__file__).resolve().parent / "auth_modules"
HOSTD = [sys.executable, "-c", "from hostd.cli import main; main()"]


def token_new(*args) -> tuple[str, str]:
    """Run ``hostd token new``. :returns: ``(token, TOML block)``."""
    out = subprocess.run([*HOSTD, "token", "new", *args], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    lines = out.splitlines()
    return lines[1], out[out.index("[[auth.tokens]]"):]


@pytest.fixture(scope="module")
def tokens():
    instructor, instructor_block = token_new("instructor-6002x", "--scopes", "views,queries",
                                             "--allow", "course_count,course_page", "--fix", "course=6.002x")
    admin, admin_block = token_new("admin", "--scopes", "admin,views,queries,events:write")
    return {"instructor": instructor, "admin": admin,
            "config": f'[auth]\nrequired = "always"\n\n{instructor_block}\n{admin_block}'}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, tokens):
    running = start_daemon(tmp_path_factory.mktemp("auth"), MODULES, {"course_stats"}, set(),
                           more=tokens["config"], token=tokens["admin"])
    yield running
    stop_daemon(running)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_the_token_table_holds_no_token(tokens):
    assert tokens["instructor"] not in tokens["config"] and tokens["admin"] not in tokens["config"]
    assert tokens["config"].count("token_sha256 = ") == 2


def test_no_token_or_a_bad_one_is_401(daemon):
    for headers in ({}, bearer("guessed-token"), bearer(daemon.token + "x")):
        for method, path in (("GET", "/query/course_count?course=a"), ("GET", "/schema"), ("GET", "/modules"),
                             ("POST", "/event"), ("GET", "/")):
            answer = daemon.request(method, path, headers=headers, json={"a": 1}, allow_redirects=False)
            if path == "/":
                assert answer.status_code == 303 and answer.headers["Location"] == "/login"
                continue
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.json()["error"]["code"] == "unauthorized"
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert daemon.get("/healthz", headers={}).status_code == 200


def test_a_missing_scope_is_403(daemon, tokens):
    instructor = bearer(tokens["instructor"])
    for method, path in (("GET", "/modules"), ("POST", "/event"), ("POST", "/modules/course_stats/rebuild")):
        answer = daemon.request(method, path, headers=instructor, json={"event_type": "x"})
        assert answer.status_code == 403, (method, path, answer.text)
        assert answer.json()["error"]["code"] == "forbidden"
    assert daemon.post("/event", json={"event_type": "x"}).status_code == 202  # the admin's token


def test_fixed_parameters_are_forced_whatever_the_caller_sends(daemon, tokens):
    instructor = bearer(tokens["instructor"])
    for answer in (daemon.get("/query/course_count?course=other&limit=2", headers=instructor),
                   daemon.post("/query/course_count", json={"course": "other", "limit": 2}, headers=instructor),
                   daemon.get("/query/course_count?limit=2", headers=instructor)):
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"course": "6.002x", "limit": 2}
    page = daemon.get("/view/course_page?course=other", headers=instructor)
    assert page.status_code == 200 and "Course 6.002x" in page.text
    assert daemon.query("course_count", course="other") == {"course": "other", "limit": 10}  # the admin: not fixed


def test_fixed_parameters_and_denied_names_vanish_from_the_schema(daemon, tokens):
    instructor = bearer(tokens["instructor"])
    entries = daemon.get("/schema", headers=instructor).json()
    assert sorted(e["name"] for e in entries) == ["course_count", "course_page"]
    assert [[p["name"] for p in e["params"]] for e in entries if e["name"] == "course_count"] == [["limit"]]
    paths = daemon.get("/openapi.json", headers=instructor).json()["paths"]
    assert "/query/course_count" in paths and "/query/secret_report" not in paths
    assert "/query/course_total" not in paths
    assert [p["name"] for p in paths["/query/course_count"]["get"]["parameters"]] == ["limit"]
    admin = {e["name"] for e in daemon.get("/schema").json()}
    assert admin == {"course_count", "course_total", "course_page", "secret_report"}


def test_a_denied_name_answers_404_like_an_unknown_one(daemon, tokens):
    instructor = bearer(tokens["instructor"])
    for name in ("secret_report", "course_total"):
        denied = daemon.get(f"/query/{name}", headers=instructor)
        unknown = daemon.get("/query/no_such_query", headers=instructor)
        assert denied.status_code == unknown.status_code == 404
        assert denied.json()["error"]["message"] == unknown.json()["error"]["message"].replace("no_such_query", name)
    assert daemon.query("secret_report") == {"secret": True}


def test_the_client_sees_what_its_token_allows(daemon, tokens):
    with Insights(daemon.base, token=tokens["instructor"], timeout=30) as ins:
        assert dir(ins.query) == ["course_count"] and dir(ins.view) == ["course_page"]
        assert str(inspect.signature(ins.query.course_count)) == "(*, limit: int = 10)"
        assert ins.query.course_count(limit=1) == {"course": "6.002x", "limit": 1}
        with pytest.raises(NotFound):
            ins.query("secret_report")
    with Insights(daemon.base, token="guessed-token", timeout=30) as stranger:
        with pytest.raises(Forbidden) as refused:
            stranger.query("course_count", course="x")
        assert refused.value.status == 401


def test_the_dashboard_login(daemon, tokens):
    browser = requests.Session()
    first = browser.get(daemon.base + "/", allow_redirects=False, timeout=30)
    assert first.status_code == 303 and first.headers["Location"] == "/login"
    assert 'name="token"' in browser.get(daemon.base + "/login", timeout=30).text
    refused = browser.post(daemon.base + "/login", data={"token": "guessed-token"}, allow_redirects=False, timeout=30)
    assert refused.status_code == 401 and not browser.cookies
    signed_in = browser.post(daemon.base + "/login", data={"token": tokens["instructor"]}, allow_redirects=False,
                             timeout=30)
    assert signed_in.status_code == 303 and signed_in.headers["Location"] == "/"
    cookie = signed_in.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    dashboard = browser.get(daemon.base + "/", timeout=30)
    assert dashboard.status_code == 200 and "course_page" in dashboard.text and "secret_report" not in dashboard.text
    assert "Course 6.002x" in browser.get(daemon.base + "/view/course_page", timeout=30).text
    assert browser.get(daemon.base + "/modules", timeout=30).status_code == 403


def test_hostd_refuses_to_serve_beyond_loopback_without_tokens(tmp_path):
    port = free_port()
    result = subprocess.run([*HOSTD, "serve", "--bind", "0.0.0.0", "--port", str(port), "--data-dir",
                             str(tmp_path / "data"), "--modules", str(MODULES)],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode != 0
    assert "[auth]" in result.stderr and "0.0.0.0" in result.stderr
    assert not (tmp_path / "data").exists()  # refused before anything started
