"""``hostd.client.Insights`` against two real ``hostd serve`` processes, and off-line.

Server A runs ``tests/client_modules/a`` (grades, roster, misbehave: slow, raises,
dies, with a 1 s call timeout); server B runs ``tests/client_modules/b`` (forum,
whose view ``hello_user`` has the same name as A's). The in-sandbox ``query``
proxy is exercised by A's ``proxy_report`` query.
"""
from __future__ import annotations

import inspect
import json
import pydoc
import rlcompleter
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hostd.client import (BadParameter, Crashed, Forbidden, Insights, ModuleRaised, NameCollision, NotFound,
                          Timeout, Unavailable)
from sandbox.errors import EndpointNotFound, ModuleLoadError, ModuleTimeout
from running_hostd import free_port, start_daemon, stop_daemon, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

MODULES = Path(__file__).resolve().parent / "client_modules"


@pytest.fixture(scope="module")
def server_a(tmp_path_factory):
    daemon = start_daemon(tmp_path_factory.mktemp("a"), MODULES / "a", {"grades", "roster", "misbehave"}, set())
    yield daemon
    stop_daemon(daemon)


@pytest.fixture(scope="module")
def server_b(tmp_path_factory):
    daemon = start_daemon(tmp_path_factory.mktemp("b"), MODULES / "b", {"forum"}, set())
    yield daemon
    stop_daemon(daemon)


@pytest.fixture
def ins(server_a):
    with Insights(server_a.base) as client:
        yield client


def misbehave_running(daemon, restarts_over: int = -1) -> int:
    """Wait until module ``misbehave`` runs after more than ``restarts_over`` restarts (a timeout
    or a crash kills it; hostd restarts it). :returns: its restart count."""
    def back():
        entry = daemon.modules()["misbehave"]
        # + 1: a count of 0 must read as "done" to wait_until
        return entry["state"] == "running" and entry["restarts"] > restarts_over and entry["restarts"] + 1
    return wait_until(back, 30, what="misbehave running again") - 1


# -- names, signatures, help ------------------------------------------------------

def test_signatures_and_help_come_from_the_schema(ins, server_a):
    assert str(inspect.signature(ins.query.grades)) == "(*, course: str, limit: int = 3)"
    assert str(inspect.signature(ins.query.typed)) == \
        "(*, i: int, f: float, b: bool, tags: list[str], s: str = 'd')"
    assert str(inspect.signature(ins.view.hello_user)) == "(*, user: str) -> str"
    text = pydoc.render_doc(ins.query.grades, renderer=pydoc.plaintext)
    assert "grades(*, course: str, limit: int = 3)" in text
    assert "Grades of a course." in text and ":param course: the course id." in text
    assert f"Query ``grades`` of module ``grades`` at {server_a.base}." in text


def test_dir_lists_names_of_each_kind_aliases_included(ins):
    assert dir(ins.query) == ["boom", "class_size", "course_grades", "die", "grades", "proxy_report",
                              "roster", "slow", "typed"]
    assert dir(ins.view) == ["hello_user"]
    assert [e["name"] for e in ins.schema() if e["module"] == "roster"] == ["roster"]


def test_completion_offers_endpoint_names(ins):
    completer = rlcompleter.Completer({"ins": ins})
    offered = {completer.complete("ins.query.gr", state) for state in range(3)} - {None}
    assert offered == {"ins.query.grades("}
    assert completer.complete("ins.view.h", 0) == "ins.view.hello_user("
    unreachable = Insights(f"http://127.0.0.1:{free_port()}")
    assert "unknown (Unavailable)" in repr(unreachable.query)


def test_calls_send_typed_parameters_and_return_results(ins):
    assert ins.query.grades(course="6.002x", limit=2) == [{"course": "6.002x", "grade": 0},
                                                         {"course": "6.002x", "grade": 10}]
    assert ins.query.course_grades(course="x") == ins.query("grades", course="x")
    assert ins.query.typed(i=3, f=0.5, b=False, tags=["a", "b"]) == \
        {"i": 3, "f": 0.5, "b": False, "tags": ["a", "b"], "s": "d"}
    assert ins.view.hello_user(user="bob") == "<html>Hello bob from A</html>"
    assert ins.query.class_size(course="x") == 4  # A's module calling another module of A


def test_a_view_gets_booleans_and_lists_in_its_query_string(server_b):
    with Insights(server_b.base) as b:
        assert b.view.forum_page(course="c&d", page=2) == "<html>c&amp;d page 2</html>"
        assert b.query.echo(i=1, f=2.5, b=True, tags=["x"]) == \
            {"i": 1, "f": 2.5, "b": True, "tags": ["x"], "s": "d"}


# -- errors -------------------------------------------------------------------------

def test_unknown_names_are_not_found_and_attribute_errors(ins):
    assert not hasattr(ins.query, "no_such_query")
    with pytest.raises(NotFound, match="no query named 'no_such_query'"):
        ins.query.no_such_query()
    with pytest.raises(EndpointNotFound) as caught:  # the call form asks the server: its 404
        ins.query("no_such_query")
    assert caught.value.status == 404 and isinstance(caught.value, AttributeError)
    with pytest.raises(NotFound):
        ins.view.grades  # a query is not a view


def test_bad_parameters_are_named(ins):
    with pytest.raises(BadParameter, match="course") as missing:
        ins.query.grades()
    assert missing.value.param == "course"
    with pytest.raises(BadParameter, match="it takes: course, limit") as unknown:
        ins.query.grades(course="x", lmit=2)
    assert unknown.value.param == "lmit"
    with pytest.raises(BadParameter) as server_side:  # converted by the server: its 400
        ins.query.typed(i="three", f=1.0, b=True, tags=[])
    assert server_side.value.param == "i" and server_side.value.status == 400


def test_module_errors_and_crashes(ins, server_a):
    restarts = misbehave_running(server_a)
    with pytest.raises(ModuleRaised) as raised:
        ins.query.boom()
    assert raised.value.status == 500 and "secret-detail" not in str(raised.value)
    with pytest.raises(Crashed) as crashed:
        ins.query.die()
    assert isinstance(crashed.value, Unavailable) and crashed.value.status == 502
    misbehave_running(server_a, restarts)


def test_an_unreachable_server_is_unavailable():
    with pytest.raises(Unavailable, match="cannot reach"):
        Insights(f"http://127.0.0.1:{free_port()}").query.anything()


def test_with_timeout_gives_up_and_leaves_the_original_alone(ins, server_a):
    restarts = misbehave_running(server_a)
    quick = ins.with_timeout(0.5)
    with pytest.raises(Timeout, match="no answer within 0.5 s") as caught:
        quick.query.slow(seconds=3)
    assert isinstance(caught.value, ModuleTimeout) and isinstance(caught.value, TimeoutError)
    misbehave_running(server_a, restarts)  # hostd's own 1 s limit kills it meanwhile
    assert ins.query.slow(seconds=0) == 0  # the original waits as long as the server does


def test_the_server_call_timeout_is_a_timeout_too(ins, server_a):
    restarts = misbehave_running(server_a)
    with pytest.raises(Timeout) as caught:  # misbehave's module.toml: call_timeout_s = 1
        ins.query.slow(seconds=5)
    assert caught.value.status == 504
    misbehave_running(server_a, restarts)


# -- merge ---------------------------------------------------------------------------

def test_merge_refuses_a_name_served_twice_naming_both_servers(server_a, server_b):
    with pytest.raises(NameCollision) as caught:
        Insights.merge([Insights(server_a.base), Insights(server_b.base)])
    assert "view 'hello_user'" in str(caught.value)
    assert server_a.base in str(caught.value) and server_b.base in str(caught.value)


def test_merge_routes_each_name_to_its_server(server_a, server_b):
    b_without_greeting = Insights(server_b.base).restrict({"default": "allow", "deny": ["hello_user"]})
    with Insights.merge([Insights(server_a.base), b_without_greeting]) as both:
        assert {"grades", "posts", "echo", "no_params"} <= set(dir(both.query))
        assert dir(both.view) == ["forum_page", "hello_user"]
        assert both.query.posts(course="c", limit=1) == [{"course": "c", "post": 0}]
        assert both.query.grades(course="c", limit=1) == [{"course": "c", "grade": 0}]
        assert both.view.hello_user(user="ann") == "<html>Hello ann from A</html>"
        assert f"at {server_b.base}." in both.query.posts.__doc__
        with pytest.raises(NotFound):
            both.query("no_such_query")
        slow = both.with_timeout(0.5)
        restarts = misbehave_running(server_a)
        with pytest.raises(Timeout):
            slow.query.slow(seconds=3)
    misbehave_running(server_a, restarts)


# -- restrict --------------------------------------------------------------------------

def test_restrict_hides_denied_names_and_forces_fixed_parameters(ins):
    instructor = ins.restrict({"default": "deny", "allow": ["grades", "typed", "hello_user"],
                               "deny": ["typed"], "fix": {"limit": 2}})
    assert dir(instructor.query) == ["grades"] and dir(instructor.view) == ["hello_user"]
    assert str(inspect.signature(instructor.query.grades)) == "(*, course: str)"
    assert len(instructor.query.grades(course="x")) == 2
    assert len(instructor.query("grades", course="x", limit=50)) == 2  # forced, whatever is sent
    with pytest.raises(BadParameter, match="limit"):
        instructor.query.grades(course="x", limit=50)
    for hidden in ("typed", "roster", "course_grades"):
        with pytest.raises(NotFound):
            getattr(instructor.query, hidden)
        with pytest.raises(NotFound):
            instructor.query(hidden, course="x")
    assert "limit" not in [p["name"] for e in instructor.schema() for p in e["params"]]


def test_restrict_takes_fixed_values_from_the_context_and_honours_scopes(ins):
    student = ins.restrict({"default": "allow", "fix": ["course"]}, {"course": "6.002x", "user": "bob"})
    assert student.query.grades(limit=1) == [{"course": "6.002x", "grade": 0}]
    assert str(inspect.signature(student.query.roster)) == "()"
    views_only = ins.restrict({"default": "allow", "scopes": ["views"]})
    assert dir(views_only.query) == [] and dir(views_only.view) == ["hello_user"]
    nested = student.restrict({"default": "allow", "deny": ["roster"]})
    assert "roster" not in dir(nested.query) and nested.query.grades(limit=1)[0]["course"] == "6.002x"


@pytest.mark.parametrize("policy, context, message", [
    ({"default": "allow", "fix": ["course"]}, {}, "context, which has no 'course'"),
    ({"allowed": ["x"]}, None, "unknown policy key"),
    ({"default": "maybe"}, None, "'allow' or 'deny'"),
])
def test_a_malformed_policy_is_refused_at_once(ins, policy, context, message):
    with pytest.raises(ValueError, match=message):
        ins.restrict(policy, context)


# -- the proxies injected into sandboxes ---------------------------------------------------

def test_injected_proxies_list_names_check_signatures_and_raise_typed_errors(ins):
    report = ins.query.proxy_report()
    assert report["dir_query"] == ["class_size", "course_grades", "grades", "proxy_report", "typed"]
    assert report["dir_view"] == ["hello_user"]
    assert report["own_signature"] == "(*, course: str, limit: int = 3)"
    assert report["missing"]["type"] == "NotFound" and report["missing"]["attribute_error"]
    assert report["bad_param"]["type"] == "BadParameter" and report["bad_param"]["param"] == "course"
    assert report["own_bad_param"]["type"] == "BadParameter" and report["own_bad_param"]["param"] == "wrong"


# -- local ------------------------------------------------------------------------------------

def test_local_runs_a_folder_of_modules_with_the_same_interface(ins):
    with Insights.local(MODULES / "a") as local:
        assert dir(local.query) == dir(ins.query)
        assert inspect.signature(local.query.grades) == inspect.signature(ins.query.grades)
        assert local.query.grades(course="x", limit=1) == ins.query.grades(course="x", limit=1)
        assert local.query.class_size(course="x") == 4  # modules of the folder call each other
        assert local.view.hello_user(user="bo") == "<html>Hello bo from A</html>"
        with pytest.raises(BadParameter) as bad:
            local.query.typed(i="three", f=1.0, b=True, tags=[])
        assert bad.value.param == "i"
        with pytest.raises(NotFound):
            local.query("no_such_query")
        with pytest.raises(Timeout):
            local.with_timeout(0.5).query.slow(seconds=2)
        limited = local.restrict({"default": "allow", "fix": {"limit": 1}})
        assert len(limited.query.grades(course="x")) == 1
        harness = local.harness
        assert harness.host is not None
    assert harness.host is None  # closing the client stopped the modules


def test_local_refuses_a_folder_whose_module_does_not_load(tmp_path):
    broken = tmp_path / "mods" / "broken"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise RuntimeError('broken-marker')\n")
    with pytest.raises(ModuleLoadError, match="broken-marker"):
        Insights.local(tmp_path / "mods", data_dir=tmp_path / "data")


# -- tokens and refusals from something other than hostd -------------------------------------------
# hostd's own 401 and 403 are met by tests/test_auth_e2e.py; here, a proxy in front of it that
# answers in its own words (no JSON error body) must still give the same errors.

class _Refusing(BaseHTTPRequestHandler):
    """A minimal server that records the Authorization header and refuses every call."""

    seen: list = []
    entry = {"class": "query", "name": "secret", "module": "m", "params": [], "category": "", "doc": ""}

    def do_GET(self):
        self.seen.append(self.headers.get("Authorization"))
        if self.path == "/schema":
            self._answer(200, json.dumps([self.entry]))
        else:  # an auth layer answering without our JSON error body
            self._answer(401, "go away", "text/plain")

    def do_POST(self):
        self.seen.append(self.headers.get("Authorization"))
        self._answer(403, json.dumps({"error": {"code": "forbidden", "message": "lacks the scope"}}))

    def _answer(self, status, body, content_type="application/json"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_the_token_is_sent_as_a_bearer_and_refusals_are_forbidden():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with Insights(f"http://127.0.0.1:{server.server_port}", token="s3cret", timeout=10) as ins:
            with pytest.raises(Forbidden, match="lacks the scope") as scope:
                ins.query.secret()
            assert scope.value.status == 403
            with pytest.raises(Forbidden, match="go away") as unknown:
                ins.view("page")
            assert unknown.value.status == 401
    finally:
        server.shutdown()
        server.server_close()
    assert _Refusing.seen == ["Bearer s3cret"] * 3
