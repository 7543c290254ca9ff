"""End-to-end: the xAPI source (``/xapi/statements``, ``/xapi/about``) of a real ``hostd serve``.

The daemon runs the modules of ``tests/property_modules`` (see
``tests/test_property_filters_e2e.py``); ``prop_recorder`` keeps every event it
receives with its identity and source, which tells whether a statement became
an event with source ``xapi``. Statements are sent raw with ``requests``, with
the real xAPI client library ``tincan``, and from real data sets in
``../shared/data``.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest
import requests

from running_hostd import start_daemon, stop_daemon

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

PROPERTY_MODULES = Path(__file__).resolve().parent / "property_modules"
RUNNING = {"prop_layer", "prop_consumer", "prop_recorder"}
FAILED = {"prop_zclash"}
# The repository is <work>/main and the shared data <work>/shared/data.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HTTP_TIMEOUT_S = 30
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def hostd(tmp_path_factory):
    daemon = start_daemon(tmp_path_factory.mktemp("xapi_e2e"), PROPERTY_MODULES, RUNNING, FAILED)
    try:
        yield daemon
    finally:
        stop_daemon(daemon)


def shared_data(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"shared test data {path} is absent (a clone outside the Insights workspace)")
    return path


# -- statements --------------------------------------------------------------------------

def statement(verb="http://adlnet.gov/expapi/verbs/experienced", **more):
    """A minimal valid statement; ``more`` replaces or adds top-level fields."""
    return {"actor": {"objectType": "Agent", "mbox": f"mailto:{uuid.uuid4().hex[:8]}@example.com"},
            "verb": {"id": verb, "display": {"en-US": "experienced"}},
            "object": {"objectType": "Activity", "id": f"http://example.com/activities/{uuid.uuid4()}"},
            **more}


def assert_bad(response, *words, index="absent") -> dict:
    """A 400 naming the problem (``words``) and, unless ``index`` is ``"absent"``, the item."""
    assert response.status_code == 400, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["code"] == "bad_event", error
    for word in words:
        assert word in error["message"], (word, error)
    if index != "absent":
        assert error["index"] == index, error
        assert (f"item {index}" if index is not None else "request body") in error["message"], error
    return error


# -- about ----------------------------------------------------------------------------------

def test_about_answers_version_1_0_3(hostd):
    response = hostd.get("/xapi/about")
    assert response.status_code == 200
    assert response.json() == {"version": ["1.0.3"]}
    assert response.headers["X-Experience-API-Version"] == "1.0.3"


# -- POST and PUT ------------------------------------------------------------------------------

def test_post_one_statement_answers_its_id(hostd):
    response = hostd.post("/xapi/statements", json=statement())
    assert response.status_code == 200, response.text
    assert response.headers["X-Experience-API-Version"] == "1.0.3"
    (new_id,) = response.json()
    assert UUID_RE.match(new_id), new_id

    given = str(uuid.uuid4())
    response = hostd.post("/xapi/statements", json=statement(id=given))
    assert response.status_code == 200, response.text
    assert response.json() == [given]

    # an upper-case UUID is the same UUID: answered (and stored) in canonical form
    upper = str(uuid.uuid4())
    response = hostd.post("/xapi/statements", json=statement(id=upper.upper()))
    assert response.json() == [upper]

    records = hostd.recorded([new_id, given, upper])
    for statement_id, record in records.items():
        assert record["source"] == "xapi", record
        assert json.loads(record["event"])["id"] == statement_id


def test_post_a_list_answers_ids_in_order(hostd):
    given = [str(uuid.uuid4()), str(uuid.uuid4())]
    batch = [statement(id=given[0]), statement(), statement(id=given[1]), statement(verb="http://x/play_video")]
    response = hostd.post("/xapi/statements", json=batch)
    assert response.status_code == 200, response.text
    ids = response.json()
    assert len(ids) == 4 and len(set(ids)) == 4
    assert ids[0] == given[0] and ids[2] == given[1]
    assert all(UUID_RE.match(i) for i in ids)
    records = hostd.recorded(ids)
    assert [json.loads(records[i]["event"])["object"] for i in ids] == [s["object"] for s in batch]
    assert {r["source"] for r in records.values()} == {"xapi"}
    # the data layer reads them as xAPI statements (in the recorder's sandbox)
    assert records[ids[3]]["verb"] == "http://x/play_video"


def test_put_with_statement_id_answers_204_and_is_idempotent(hostd):
    statement_id = str(uuid.uuid4())
    body = statement()
    response = hostd.put("/xapi/statements", params={"statementId": statement_id}, json=body)
    assert response.status_code == 204, response.text
    assert response.headers["X-Experience-API-Version"] == "1.0.3"
    again = hostd.put("/xapi/statements", params={"statementId": statement_id}, json=body)
    assert again.status_code == 204, again.text
    # a statement carrying the same id in the body is fine too
    same = hostd.put("/xapi/statements", params={"statementId": statement_id}, json={**body, "id": statement_id})
    assert same.status_code == 204, same.text

    (record,) = hostd.recorded([statement_id]).values()
    assert record["source"] == "xapi"
    assert json.loads(record["event"]) == {**body, "id": statement_id}
    # stored once: the log knows its identity already
    assert not hostd.is_new({**body, "id": statement_id})
    time.sleep(0.3)
    assert len(hostd.query("recorded", ids=[statement_id])) == 1   # processed once


def test_put_needs_a_statement_id(hostd):
    assert_bad(hostd.put("/xapi/statements", json=statement()), "statementId")


INVALID = [
    ("missing actor", lambda s: {k: v for k, v in s.items() if k != "actor"}, ["actor"]),
    ("missing verb", lambda s: {k: v for k, v in s.items() if k != "verb"}, ["verb"]),
    ("missing object", lambda s: {k: v for k, v in s.items() if k != "object"}, ["object"]),
    ("verb id not an IRI", lambda s: {**s, "verb": {"id": "played"}}, ["verb.id", "IRI"]),
    ("verb without id", lambda s: {**s, "verb": {"display": {"en-US": "x"}}}, ["verb.id"]),
    ("Agent with two identifiers",
     lambda s: {**s, "actor": {"mbox": "mailto:a@example.com", "account": {"homePage": "http://h", "name": "a"}}},
     ["actor", "exactly one"]),
    ("Agent without identifier", lambda s: {**s, "actor": {"objectType": "Agent", "name": "Ann"}},
     ["actor", "exactly one"]),
    ("mbox not mailto", lambda s: {**s, "actor": {"mbox": "ann@example.com"}}, ["mbox", "mailto"]),
    ("account without homePage", lambda s: {**s, "actor": {"account": {"name": "a"}}}, ["account", "homePage"]),
    ("Activity id not an IRI", lambda s: {**s, "object": {"objectType": "Activity", "id": "video 1"}},
     ["object.id", "IRI"]),
    ("bad UUID id", lambda s: {**s, "id": "not-a-uuid"}, ["not-a-uuid", "UUID"]),
    ("not an object", lambda s: "a string", ["JSON object"]),
]


@pytest.mark.parametrize("problem,spoil,words", INVALID, ids=[case[0] for case in INVALID])
def test_an_invalid_statement_is_400_naming_it_and_nothing_is_stored(hostd, problem, spoil, words):
    good = statement(id=str(uuid.uuid4()))
    bad = spoil(statement(id=str(uuid.uuid4())))
    response = hostd.post("/xapi/statements", json=[good, bad])
    assert_bad(response, "invalid xAPI statement", *words, index=1)
    # alone, not in a list: the whole body is named
    assert_bad(hostd.post("/xapi/statements", json=bad), *words, index=None)
    # the valid statement of the rejected batch was not stored
    assert hostd.is_new(good)
    if isinstance(bad, dict) and "id" in bad and UUID_RE.match(str(bad["id"])):
        assert hostd.is_new(bad)


def test_a_statement_id_differing_from_statement_id_param_is_400(hostd):
    body = statement(id=str(uuid.uuid4()))
    other = str(uuid.uuid4())
    assert_bad(hostd.put("/xapi/statements", params={"statementId": other}, json=body),
               "statementId does not match", index=None)
    assert_bad(hostd.put("/xapi/statements", params={"statementId": "nope"}, json=statement()),
               "'nope'", "UUID", index=None)
    assert hostd.is_new(body)
    assert hostd.is_new({**body, "id": other})


def test_bodies_that_are_not_statements_are_400(hostd):
    assert_bad(hostd.post("/xapi/statements", data=b"{not json", headers={"Content-Type": "application/json"}),
               "invalid JSON", index=None)
    assert_bad(hostd.post("/xapi/statements", json=[]), "empty", index=None)
    assert_bad(hostd.post("/xapi/statements", json=[statement(), 42]), "JSON object", index=1)


# -- the tincan client library ---------------------------------------------------------------------

@pytest.fixture
def lrs(hostd):
    tincan = pytest.importorskip("tincan", reason="the xAPI client library tincan is not installed")
    return tincan, tincan.RemoteLRS(endpoint=f"{hostd.base}/xapi/", version="1.0.3",
                                    username="insights", password="unused")


def _tincan_statement(tincan, name, verb="http://x/play_video", statement_id=None):
    return tincan.Statement(
        id=statement_id,
        actor=tincan.Agent(name=name, account=tincan.AgentAccount(name=name, home_page="http://lms.example")),
        verb=tincan.Verb(id=verb, display=tincan.LanguageMap({"en-US": verb.rsplit("/", 1)[-1]})),
        object=tincan.Activity(id="http://x/video/1"),
        context=tincan.Context(registration=uuid.uuid4()))


def test_tincan_about(lrs):
    tincan, client = lrs
    response = client.about()
    assert response.success, (response.response.status, response.data)
    assert "1.0.3" in response.content.version


def test_tincan_save_statement_and_save_statements(hostd, lrs):
    tincan, client = lrs
    posted = client.save_statement(_tincan_statement(tincan, "ivy"))   # no id: POST
    assert posted.success, (posted.response.status, posted.data)
    posted_id = str(posted.content.id)
    assert UUID_RE.match(posted_id)

    chosen = uuid.uuid4()
    put = client.save_statement(_tincan_statement(tincan, "jack", statement_id=chosen))   # with id: PUT
    assert put.success, (put.response.status, put.data)
    assert put.response.status == 204

    many = client.save_statements([_tincan_statement(tincan, "kim"),
                                   _tincan_statement(tincan, "lee", verb="http://x/pause_video")])
    assert many.success, (many.response.status, many.data)
    many_ids = [str(s.id) for s in many.content]
    assert all(UUID_RE.match(i) for i in many_ids) and len(set(many_ids)) == 2

    ids = [posted_id, str(chosen), *many_ids]
    records = hostd.recorded(ids)
    assert {r["source"] for r in records.values()} == {"xapi"}
    actors = {i: json.loads(records[i]["event"])["actor"]["account"]["name"] for i in ids}
    assert actors == dict(zip(ids, ["ivy", "jack", "kim", "lee"]))
    assert records[many_ids[1]]["verb"] == "http://x/pause_video"

    invalid = client.save_statement({"actor": {"mbox": "mailto:x@example.com"}, "verb": {"id": "nope"},
                                     "object": {"id": "http://x/o"}})
    assert not invalid.success and invalid.response.status == 400


# -- real data ----------------------------------------------------------------------------------

def test_ralph_statements_are_all_accepted(hostd):
    path = shared_data("ralph/statements.first200.jsonl")
    statements = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(statements) == 200
    ids = []
    for start in range(0, len(statements), 50):
        response = hostd.post("/xapi/statements", json=statements[start:start + 50])
        assert response.status_code == 200, (start, response.text)
        ids.extend(response.json())
    assert ids == [s["id"] for s in statements]
    records = hostd.recorded(ids, timeout_s=60)
    assert {r["source"] for r in records.values()} == {"xapi"}
    assert {r["verb"] for r in records.values()} <= {s["verb"]["id"] for s in statements}
    assert json.loads(records[ids[0]]["event"]) == statements[0]


def test_lrs_conformance_suite_default_statement_is_accepted(hostd):
    path = shared_data("lrs-conformance-test-suite/default.json")
    document = json.loads(path.read_text(encoding="utf-8"))
    response = hostd.post("/xapi/statements", json=document)
    assert response.status_code == 200, response.text
    (statement_id,) = response.json()
    assert UUID_RE.match(statement_id)
    (record,) = hostd.recorded([statement_id]).values()
    assert record["source"] == "xapi"
    assert json.loads(record["event"]) == {**document, "id": statement_id}
    assert record["verb"] == "http://adlnet.gov/expapi/verbs/attended"


def test_two_statements_with_one_id_in_a_batch_are_rejected(hostd):
    twice = {**statement(), "id": str(uuid.uuid4())}
    answer = requests.post(f"{hostd.base}/xapi/statements", json=[twice, dict(twice)], timeout=10)
    assert answer.status_code == 400
    assert answer.json()["error"]["index"] == 1


def test_an_existing_id_with_other_content_is_a_conflict(hostd):
    statement_id = str(uuid.uuid4())
    first = {**statement(), "id": statement_id}
    assert requests.post(f"{hostd.base}/xapi/statements", json=first, timeout=10).status_code == 200
    assert requests.post(f"{hostd.base}/xapi/statements", json=first, timeout=10).status_code == 200
    other = {**first, "verb": {"id": "http://adlnet.gov/expapi/verbs/failed"}}
    conflict = requests.put(f"{hostd.base}/xapi/statements", params={"statementId": statement_id},
                            json=other, timeout=10)
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "conflict"


def test_a_null_id_is_rejected(hostd):
    answer = requests.post(f"{hostd.base}/xapi/statements", json={**statement(), "id": None}, timeout=10)
    assert answer.status_code == 400 and "null" in answer.json()["error"]["message"]
