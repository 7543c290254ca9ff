"""End-to-end: event properties in a real ``hostd serve`` (SPEC §4).

The daemon runs the modules of ``tests/property_modules``:

* ``prop_layer``: a data layer; its ``properties.py`` defines ``learn.verb`` and
  ``learn.actor`` for sources ``edx`` and ``xapi``;
* ``prop_consumer``: a handler filtered on ``{"learn.verb": "http://x/play_video"}``
  that records each event's identity and ``evt.learn.actor``;
* ``prop_recorder``: records every event (used by ``tests/test_xapi.py``);
* ``prop_zclash``: redefines ``learn.verb`` for ``edx``, so it must fail, naming both.

Filters are evaluated in hostd, properties are read in the sandbox: both go
through the data layer's ``properties.py``.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from running_hostd import start_daemon, stop_daemon, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

PROPERTY_MODULES = Path(__file__).resolve().parent / "property_modules"
RUNNING = {"prop_layer", "prop_consumer", "prop_recorder"}
FAILED = {"prop_zclash"}
HTTP_TIMEOUT_S = 30
PLAY = "http://x/play_video"


@pytest.fixture(scope="module")
def hostd(tmp_path_factory):
    daemon = start_daemon(tmp_path_factory.mktemp("props_e2e"), PROPERTY_MODULES, RUNNING, FAILED)
    try:
        yield daemon
    finally:
        stop_daemon(daemon)


# -- events ---------------------------------------------------------------------------

def edx_event(event_type, username, tag):
    return {"event_type": event_type, "username": username, "tag": tag, "event": {"id": "video-1"},
            "time": "2024-01-01T00:00:00+00:00"}


def statement(verb, actor, tag):
    """An xAPI statement; ``tag`` (a UUID) goes to ``context.registration``."""
    return {"actor": actor, "verb": {"id": verb, "display": {"en-US": verb.rsplit("/", 1)[-1]}},
            "object": {"objectType": "Activity", "id": "http://x/video/1"},
            "context": {"registration": tag}}


def account(name):
    return {"objectType": "Agent", "account": {"homePage": "http://lms.example", "name": name}}


# -- tests --------------------------------------------------------------------------------

def test_a_module_redefining_a_property_fails_naming_both(hostd):
    modules = hostd.modules()
    assert {name for name, entry in modules.items() if entry["state"] == "running"} == RUNNING
    clash = modules["prop_zclash"]
    assert clash["state"] == "failed"
    assert "prop_zclash" in clash["last_error"] and "prop_layer" in clash["last_error"]
    assert "learn.verb" in clash["last_error"] and "edx" in clash["last_error"]
    # the survivor's definition is the one in force
    described = {(p["namespace"], p["name"]): p for p in hostd.get("/event_properties").json()}
    assert described[("learn", "verb")]["modules"] == ["module prop_layer"]


def test_a_filter_on_a_property_selects_matching_events_of_both_sources(hostd):
    tag = str(uuid.uuid4())
    edx_events = [edx_event("play_video", "alice", tag), edx_event("pause_video", "alice", tag),
                  edx_event("play_video", "bob", tag), edx_event("seek_video", "bob", tag),
                  # a raw field that looks like the property is not the property
                  {**edx_event("pause_video", "carl", tag), "learn": {"verb": PLAY}}]
    response = hostd.post("/event", json=edx_events)
    assert response.status_code in (200, 202), response.text
    edx_ids = response.json()["ids"]
    assert response.json()["accepted"] == len(edx_events)

    statements = [statement(PLAY, {"objectType": "Agent", "mbox": "mailto:dana@example.com"}, tag),
                  statement("http://x/pause_video", account("erin"), tag),
                  statement(PLAY, account("frank"), tag),
                  statement("http://adlnet.gov/expapi/verbs/completed", account("frank"), tag)]
    response = hostd.post("/xapi/statements", json=statements)
    assert response.status_code == 200, response.text
    xapi_ids = response.json()
    assert len(xapi_ids) == len(statements)

    expected = [{"id": edx_ids[0], "source": "http", "actor": "alice", "tag": tag},
                {"id": edx_ids[2], "source": "http", "actor": "bob", "tag": tag},
                {"id": xapi_ids[0], "source": "xapi", "actor": "mailto:dana@example.com", "tag": tag},
                {"id": xapi_ids[2], "source": "xapi", "actor": "frank", "tag": tag}]
    received = wait_until(lambda: (lambda got: got if len(got) >= len(expected) else None)(
        hostd.query("received_plays", tag=tag)), 30, what="the consumer's events")
    assert received == expected
    # every event was delivered to the catch-all recorder, so delivery went past them all:
    # nothing more arrives for the consumer
    everything = edx_ids + xapi_ids
    wait_until(lambda: len(hostd.query("recorded", ids=everything)) == len(everything), 30,
               what="the recorder caught up")
    assert hostd.query("received_plays", tag=tag) == expected


def test_properties_are_read_in_every_sandbox(hostd):
    tag = str(uuid.uuid4())
    response = hostd.post("/event", json=[edx_event("load_video", "gina", tag)])
    (edx_id,) = response.json()["ids"]
    (xapi_id,) = hostd.post("/xapi/statements",
                            json=statement("http://x/seeked", account("hank"), tag)).json()
    recorded = wait_until(lambda: (lambda got: got if len(got) == 2 else None)(
        hostd.query("recorded", ids=[edx_id, xapi_id])), 30, what="the recorder's events")
    verbs = {r["id"]: (r["source"], r["verb"]) for r in recorded}
    assert verbs == {edx_id: ("http", "http://x/load_video"), xapi_id: ("xapi", "http://x/seeked")}


def test_event_properties_lists_the_data_layer(hostd):
    response = hostd.get("/event_properties")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    described = {(p["namespace"], p["name"]): p for p in response.json()}
    assert set(described) == {("learn", "verb"), ("learn", "actor")}
    verb, actor = described[("learn", "verb")], described[("learn", "actor")]
    assert verb["sources"] == ["edx", "xapi"] and actor["sources"] == ["edx", "xapi"]
    assert verb["doc"] == "The verb IRI of a learning event."   # first paragraph of the first docstring
    assert actor["doc"] == "Who did it: the edX username."
    assert verb["modules"] == actor["modules"] == ["module prop_layer"]

    page = hostd.get("/event_properties", params={"f": "html"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "evt.learn.verb" in page.text and "evt.learn.actor" in page.text
    assert "The verb IRI of a learning event." in page.text
    assert "edx, xapi" in page.text and "prop_layer" in page.text
    assert "prop_zclash" not in page.text
    assert not page.text.lstrip().startswith("[")


def test_the_harness_loads_a_data_layer_without_running_it():
    """``ModuleHarness(properties=[folder])``: the consumer alone, with ``prop_layer`` as its data layer."""
    from sandbox.testing import ModuleHarness

    tag = str(uuid.uuid4())
    with ModuleHarness(PROPERTY_MODULES / "prop_consumer", properties=[PROPERTY_MODULES / "prop_layer"]) as harness:
        assert set(harness.host.module_status()) == {"prop_consumer"}   # the data layer does not run
        answer = harness.send_events([edx_event("play_video", "mia", tag), edx_event("stop_video", "mia", tag),
                                      statement(PLAY, account("noah"), tag),
                                      statement("http://x/stop", account("noah"), tag)])
        received = harness.query("received_plays", tag=tag)
        assert [(r["id"], r["actor"]) for r in received] == [(answer["ids"][0], "mia"), (answer["ids"][2], "noah")]
        assert harness.status()["dead_letters"] == 0
