"""Federation: three real ``hostd serve`` nodes, each with its own data dir and store.

* node B hosts ``beta`` and requires a token: ``peer-a`` (what node A presents to it),
  ``peer-c`` (what node C presents: its calls get ``course`` fixed to ``from-c``) and
  ``shared``, which node C's callers hold too;
* node C hosts ``gamma`` and lists B as a peer with ``peer-c``'s token;
* node A hosts ``alpha`` and lists B (with ``peer-a``'s token) and C; it knows a
  ``limited`` token of its own: queries only, ``beta_twice`` denied, ``course`` fixed.

The last test SIGKILLs node C.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
from pathlib import Path

import psutil
import pytest
import requests

from hostd.client import Insights
from hostd.config import ConfigError, load_config
from hostd.federation import Federation
from hostd.peers import PEER_FIELDS, Peer
from sandbox.errors import EndpointNotFound
from running_hostd import start_daemon, stop_daemon, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MODULES = Path(__file__).resolve().parent / "federation_modules"
CONF = Path(__file__).resolve().parent.parent / "conf" / "hostd.toml"
PEER_TOKEN = "peer-a-token-0123456789"
PEER_C_TOKEN = "peer-c-token-0123456789"
SHARED_TOKEN = "shared-token-0123456789"
LIMITED_TOKEN = "limited-token-0123456789"


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def token_table(name, token, scopes, **policy):
    lines = [f'name = "{name}"', f'token = "{token}"', f"scopes = {scopes!r}".replace("'", '"'),
             *(f"{key} = {value}" for key, value in policy.items())]
    return "[[auth.tokens]]\n" + "\n".join(lines) + "\n"


def peer_table(url, token=None):
    return f'[[peers]]\nurl = "{url}"\n' + (f'token = "{token}"\n' if token else "") + "timeout_s = 2.0\n" \
        "schema_cache_s = 1.0\n"


# -- the configuration ----------------------------------------------------------------

def test_peers_are_checked_when_the_configuration_loads(tmp_path):
    def load(text):
        path = tmp_path / "hostd.toml"
        path.write_text(text, encoding="utf-8")
        return load_config(path, {"storage.data_dir": str(tmp_path)})

    config = load(peer_table("http://127.0.0.1:8101/", "t0ken") + '[[peers]]\nurl = "https://b.example"\n')
    assert config["peers"] == [
        {"url": "http://127.0.0.1:8101", "token": "t0ken", "timeout_s": 2.0, "schema_cache_s": 1.0},
        {"url": "https://b.example", "token": None, "timeout_s": 5.0, "schema_cache_s": 3.0}]
    assert load("")["peers"] == []
    for text, message in (
            ('[[peers]]\nurl = "ftp://a"\n', r"peers\[0\]\.url must be an http:// or https:// base URL"),
            ('[[peers]]\nurl = "http://user:pw@a"\n', r"peers\[0\]\.url must not carry credentials"),
            ('[[peers]]\ntoken = "x"\n', r"peers\[0\] needs a url"),
            ('[[peers]]\nurl = "http://a"\nwho = 1\n', r"peers\[0\]: unknown key\(s\) who"),
            ('[[peers]]\nurl = "http://a"\ntimeout_s = 0\n', r"peers\[0\]\.timeout_s must be a number of seconds"),
            ('[[peers]]\nurl = "http://a"\ntoken = ""\n', r"peers\[0\]\.token \(http://a\) must be a non-empty"),
            ('[[peers]]\nurl = "http://a"\n[[peers]]\nurl = "http://a/"\n',
             r"peers\[1\] has the same url as \[0\]"),
            ('peers = "http://a"\n', r"peers\[0\] must be a table")):
        with pytest.raises(ConfigError, match=message):
            load(text)


def test_every_key_of_a_peer_table_is_documented_in_conf():
    example = "\n".join(line.strip()[1:].strip() for line in CONF.read_text(encoding="utf-8").splitlines()
                        if line.strip().startswith("#"))
    assert "[[peers]]" in example
    for key, meaning in PEER_FIELDS:
        assert f"\n{key} = " in example, f"peers key {key!r} is not in {CONF}'s example"
        assert meaning.strip()


def test_a_peer_that_never_answers_is_unavailable_after_its_timeout():
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        federation = Federation([Peer(url, timeout_s=0.5)], 1.0)
        try:
            assert federation.unreachable() == [url]
            assert federation.entries() == [] and federation.find("query", "anything") is None
        finally:
            federation.close()


# -- three nodes -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    started = {}
    try:
        started["b"] = start_daemon(
            tmp_path_factory.mktemp("node_b"), MODULES / "node_b", {"beta"}, set(), token=SHARED_TOKEN,
            more='[auth]\nrequired = "always"\n\n'
                 + token_table("peer-a", PEER_TOKEN, ["views", "queries"], default='"allow"')
                 + token_table("peer-c", PEER_C_TOKEN, ["views", "queries"], default='"allow"',
                               fix='{ course = "from-c" }')
                 + token_table("shared", SHARED_TOKEN, ["views", "queries", "admin"], default='"allow"'))
        started["c"] = start_daemon(
            tmp_path_factory.mktemp("node_c"), MODULES / "node_c", {"gamma"}, set(),
            more=token_table("shared", SHARED_TOKEN, ["views", "queries", "admin"], default='"allow"')
                 + peer_table(started["b"].base, PEER_C_TOKEN))
        started["a"] = start_daemon(
            tmp_path_factory.mktemp("node_a"), MODULES / "node_a", {"alpha"}, set(),
            more=token_table("limited", LIMITED_TOKEN, ["queries"], default='"allow"', deny='["beta_twice"]',
                             fix='{ course = "6.002x" }')
                 + peer_table(started["b"].base, PEER_TOKEN) + peer_table(started["c"].base))
        yield started
    finally:
        for daemon in started.values():
            if daemon.process.poll() is None:
                stop_daemon(daemon)


def test_a_query_and_a_view_of_a_peer_answer_through_this_node(nodes):
    a = nodes["a"]
    assert a.get("/query/beta_double", params={"x": "4"}).json() == 8
    assert a.post("/query/beta_double", json={"x": 5}).json() == 10
    assert a.post("/query/beta_twice", json={"x": 6}).json() == 12  # an alias, as on B
    page = a.get("/view/beta_page", params={"who": "bob"})
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert page.text == "<html><body>Hello bob from beta</body></html>"
    assert a.get("/query/gamma_hello").json() == "hello from gamma"


def test_a_peers_error_comes_back_as_it_answered_it(nodes):
    a = nodes["a"]
    missing = a.post("/query/beta_double", json={})
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "bad_parameter"
    assert missing.json()["error"]["param"] == "x"
    assert missing.json()["error"]["node"] == nodes["b"].base
    bad = a.get("/query/beta_double", params={"x": "many"})
    assert bad.status_code == 400 and "'x'" in bad.json()["error"]["message"]
    unknown = a.get("/query/nowhere_at_all")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"


def test_a_name_this_node_serves_is_answered_here(nodes):
    assert nodes["a"].get("/query/shared_name").json() == "a"
    assert nodes["b"].get("/query/shared_name").json() == "b"
    entries = [e for e in nodes["a"].get("/schema").json() if e["name"] == "shared_name"]
    assert [(e["module"], e["node"]) for e in entries] == [("alpha", "local")]


def test_a_sandbox_query_reaches_a_module_on_another_node(nodes):
    assert nodes["a"].get("/query/via_peer", params={"x": "21"}).json() == {"doubled": 42}


def test_the_schema_is_the_union_each_entry_marked_by_node(nodes):
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    entries = {(e["class"], e["name"]): e for e in a.get("/schema").json()}
    assert {key: e["node"] for key, e in entries.items()} == {
        ("query", "alpha_local"): "local", ("query", "shared_name"): "local", ("query", "via_peer"): "local",
        ("query", "via_gone_peer"): "local",
        ("query", "beta_double"): b.base, ("query", "beta_twice"): b.base, ("view", "beta_page"): b.base,
        ("query", "course_of"): b.base, ("query", "gamma_hello"): c.base}
    assert entries[("query", "beta_double")]["aliases"] == ["beta_twice"]
    assert entries[("query", "beta_double")]["params"] == [
        {"name": "x", "type": "int", "required": True, "default": None}]
    assert not any("unavailable" in e for e in entries.values())
    # B has no peers; C has B, yet A takes only C's own names from C (B's come from B)
    assert {(e["name"], e["node"]) for e in b.get("/schema").json()} == {
        ("beta_double", "local"), ("beta_twice", "local"), ("beta_page", "local"), ("shared_name", "local"),
        ("course_of", "local")}
    assert {(e["name"], e["node"]) for e in c.get("/schema").json()} == {
        ("gamma_hello", "local"), ("beta_double", b.base), ("beta_twice", b.base), ("beta_page", b.base),
        ("shared_name", "local"), ("course_of", b.base)}
    page = a.get("/schema", params={"f": "html"}).text
    assert b.base in page and c.base in page
    paths = a.get("/openapi.json").json()["paths"]
    assert "/query/beta_double" in paths and "/view/beta_page" in paths and "/query/alpha_local" in paths


def test_the_dashboard_shows_the_peers_modules_marked_by_node(nodes):
    a, b = nodes["a"], nodes["b"]
    page = a.get("/").text
    assert 'id="module-alpha"' in page
    beta = page.split(f'id="module-beta@{b.base}"', 1)[1].split("<section", 1)[0]
    assert f'data-node="{b.base}"' in page
    assert 'state-remote">remote' in beta
    assert 'data-view="beta_page"' in beta and 'data-url="/view/beta_page"' in beta
    assert "beta_double" in beta
    assert f'id="module-gamma@{nodes["c"].base}"' in page


def test_the_python_client_sees_every_node_through_one(nodes):
    with Insights(nodes["a"].base) as client:
        assert client.query.beta_double(x=3) == 6
        assert "Hello ann" in client.view.beta_page(who="ann")
        assert str(client.query.beta_double.__signature__) == "(*, x: int)"


def test_the_peers_token_is_sent_and_never_the_callers(nodes):
    b, c = nodes["b"], nodes["c"]
    assert requests.get(b.base + "/query/course_of", timeout=30).status_code == 401
    assert requests.get(b.base + "/query/course_of", params={"course": "x"}, headers=bearer(SHARED_TOKEN),
                        timeout=30).json() == "x"
    # C's caller holds "shared", which B takes and does not fix; C presents "peer-c", which B fixes
    answer = c.get("/query/course_of", params={"course": "x"}, headers=bearer(SHARED_TOKEN))
    assert answer.status_code == 200, answer.text
    assert answer.json() == "from-c"
    # a token the peer does not take: the peer is unreachable for this node, its names unknown
    refused = Federation([Peer(b.base, token="not-a-token-of-b-0000", timeout_s=5.0)], 10.0)
    try:
        assert refused.unreachable() == [b.base]
        with pytest.raises(EndpointNotFound):
            refused.call("query", "beta_double", {"x": 1})
        assert refused.entries() == []
    finally:
        refused.close()


def test_the_callers_policy_here_applies_to_forwarded_names(nodes):
    a = nodes["a"]
    limited = bearer(LIMITED_TOKEN)
    assert a.get("/query/course_of", params={"course": "other"}, headers=limited).json() == "6.002x"
    assert a.get("/query/course_of", params={"course": "other"}).json() == "other"
    for name in ("beta_twice", "beta_double"):  # denying an alias denies its endpoint's other names
        denied = a.get(f"/query/{name}", params={"x": 1}, headers=limited)
        assert denied.status_code == 404, (name, denied.text)
    assert a.get("/view/beta_page", params={"who": "x"}, headers=limited).status_code == 403
    entries = {e["name"]: e for e in a.get("/schema", headers=limited).json()}
    assert "beta_double" not in entries and "beta_twice" not in entries and "beta_page" not in entries
    assert entries["course_of"]["params"] == [] and entries["gamma_hello"]["node"] == nodes["c"].base


def test_a_forwarded_request_is_answered_from_the_nodes_own_modules(nodes):
    a = nodes["a"]
    forwarded = {"X-Insights-Forwarded": "1"}
    assert a.get("/query/beta_double", params={"x": 1}, headers=forwarded).status_code == 404
    assert {e["node"] for e in a.get("/schema", headers=forwarded).json()} == {"local"}


def kill_node(daemon) -> None:
    """SIGKILL a node's whole process tree and wait for it; then remove its data dir."""
    tree = [psutil.Process(daemon.process.pid), *psutil.Process(daemon.process.pid).children(recursive=True)]
    for process in tree:
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    daemon.process.wait(30)
    psutil.wait_procs(tree, timeout=30)
    shutil.rmtree(daemon.data_dir, ignore_errors=True)


def test_a_dead_peer_answers_503_for_its_names_only(nodes, caplog):  # last: it kills node C
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    assert a.get("/query/gamma_hello").json() == "hello from gamma"
    # a name two peers serve: the first (in order) that is up answers it
    both = Federation([Peer(c.base), Peer(b.base, PEER_TOKEN)], 10.0)
    try:
        with caplog.at_level("WARNING", logger="insights.federation"):
            assert both.find("query", "shared_name")["node"] == c.base
        assert both.call("query", "shared_name", {}) == "c"
        assert f"served by module gamma at {c.base} and by module beta at {b.base}" in caplog.text
        kill_node(c)
        assert both.call("query", "shared_name", {}) == "b"
        assert [e["node"] for e in both.entries() if e["name"] == "shared_name"] == [b.base]
    finally:
        both.close()
    gone = a.get("/query/gamma_hello")
    assert gone.status_code == 503, gone.text
    assert gone.json()["error"]["code"] == "peer_unavailable"
    assert c.base in gone.json()["error"]["message"]
    assert a.get("/query/alpha_local").json() == {"node": "a"}
    assert a.get("/query/beta_double", params={"x": 7}).json() == 14
    assert a.get("/query/via_peer", params={"x": 2}).json() == {"doubled": 4}
    nested = a.get("/query/via_gone_peer")  # the module's call failed: the module raised
    assert nested.status_code == 500 and "Unavailable" in nested.json()["error"]["message"], nested.text

    def marked():
        schema = a.get("/schema")
        assert schema.status_code == 200
        entries = {e["name"]: e for e in schema.json()}
        return entries.get("gamma_hello", {}).get("unavailable")
    assert c.base in wait_until(marked, 30, what="gamma_hello marked unavailable in /schema")
    entries = {e["name"]: e for e in a.get("/schema").json()}
    assert "unavailable" not in entries["beta_double"] and entries["alpha_local"]["node"] == "local"
    def dashboard_marks_it():  # each web worker learns it on its own
        page = a.get("/")
        assert page.status_code == 200
        return 'state-unreachable">unreachable' in page.text.split(f'id="module-gamma@{c.base}"', 1)[-1]
    wait_until(dashboard_marks_it, 30, what="gamma shown unreachable on the dashboard")
