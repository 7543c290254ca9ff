"""tincan's event properties as hostd and the sandboxes see them: sources, dispatch, settings."""
import json

import pytest

from sandbox.events import Event
from sandbox.properties import build_registry

from tincan_testdata import DATA, ERB, LMS_ROOT_URL, MODULE, configured_copy, load_edx_to_xapi

e2x = load_edx_to_xapi()

PLAY = {"name": "play_video", "timestamp": "2020-07-15T06:52:55.057099+00:00",
        "data": {"id": "0b9e39477cf34507a7a48f74be381fdd", "currentTime": 12.34567, "duration": 195},
        "context": {"course_id": "course-v1:edX+DemoX+Demo_Course", "username": "edx", "user_id": 3,
                    "host": "lms.example.org", "event_source": "browser", "session": "abc"}}


def _raw_log_form(event: dict) -> dict:
    """The tracking-log line of an in-process event (browser payloads JSON-encoded, as logged)."""
    context = dict(event.get("context") or {})
    line = {"event_type": event["name"], "time": event["timestamp"], "context": context,
            "event_source": context.pop("event_source", "server")}
    for key in ("username", "session", "host", "referer", "page", "ip", "agent", "accept_language"):
        if key in context:
            line[key] = context.pop(key)
    payload = event.get("data")
    line["event"] = json.dumps(payload) if line["event_source"] == "browser" else payload
    return line


@pytest.fixture(scope="module")
def registry():
    # The module's own module.toml: no settings (default root URL and actor names).
    return build_registry({"tincan": MODULE / "properties.py"}, entry_points=False)


def _event(raw, registry):
    return Event(raw, {"id": "x"}, properties=registry)


# -- sources ------------------------------------------------------------------------

def test_both_edx_forms_are_the_edx_source(registry):
    assert registry.sources_of(_event(PLAY, registry)) == ["edx"]
    assert registry.sources_of(_event(_raw_log_form(PLAY), registry)) == ["edx"]


def test_a_statement_is_the_xapi_source(registry):
    statement = e2x.XapiTransformer().statements(PLAY)[0]
    assert registry.sources_of(_event(statement, registry)) == ["xapi"]


def test_an_event_of_no_known_source_has_no_statement(registry):
    event = _event({"event": "cachetest", "key": "k"}, registry)
    assert registry.sources_of(event) == []
    assert event.tincan.statement is None and event.tincan.verb is None
    assert not event.tincan.statements


def test_an_unmapped_edx_type_has_an_actor_but_no_statement(registry):
    event = _event({"event_type": "seq_goto", "username": "bob", "host": "lms.example.org",
                    "time": "2014-06-19T21:50:33+00:00", "event": "{\"old\": 1, \"new\": 2}"}, registry)
    assert event.tincan.statements == [] and event.tincan.statement is None and event.tincan.verb is None
    assert event.tincan.actor == {"objectType": "Agent",
                                  "account": {"homePage": "https://lms.example.org", "name": "bob"}}
    assert event.tincan.timestamp == "2014-06-19T21:50:33+00:00"


def test_unknown_property_names_the_known_ones(registry):
    with pytest.raises(AttributeError, match="statement.*verb"):
        _event(PLAY, registry).tincan.verbs


# -- the edX source ------------------------------------------------------------

def test_default_settings_use_the_username_and_the_event_host(registry):
    event = _event(PLAY, registry)
    assert event.tincan.actor == {"objectType": "Agent",
                                  "account": {"homePage": "https://lms.example.org", "name": "edx"}}
    assert event.tincan.verb["id"] == "https://w3id.org/xapi/video/verbs/played"
    assert event.tincan.object["id"] == ("https://lms.example.org/xblock/block-v1:edX+DemoX+Demo_Course"
                                         "+type@video+block@0b9e39477cf34507a7a48f74be381fdd")
    assert event.tincan.result == {"extensions": {"https://w3id.org/xapi/video/extensions/time": 12.346}}
    assert event.tincan.timestamp == PLAY["timestamp"]
    assert event.tincan.context["contextActivities"]["parent"][0]["id"].endswith(
        "/course/course-v1:edX+DemoX+Demo_Course")


def test_the_tracking_log_form_gives_the_same_statements(registry):
    assert _event(_raw_log_form(PLAY), registry).tincan.statements == _event(PLAY, registry).tincan.statements


@pytest.mark.skipif(not (ERB / "current").is_dir(), reason=f"real test data not found at {ERB}")
def test_every_fixture_reads_the_same_in_its_tracking_log_form():
    transformer = e2x.XapiTransformer(lms_root_url=LMS_ROOT_URL)
    for path in sorted((ERB / "current").glob("*.json")):
        event = json.loads(path.read_text(encoding="utf-8"))
        if "name" not in event or "timestamp" not in event:
            continue  # already (partly) in the tracking-log form
        assert transformer.statements(_raw_log_form(event)) == transformer.statements(event), path.name


def test_settings_come_from_module_toml(tmp_path):
    folder = configured_copy(tmp_path, f'[tincan]\nlms_root_url = "{LMS_ROOT_URL}/"\n'
                                       '[tincan.actor_names]\nedx = "learner-1"\n"7" = "learner-7"\n')
    registry = build_registry({"tincan": folder / "properties.py"}, entry_points=False)
    assert _event(PLAY, registry).tincan.actor["account"] == {"homePage": LMS_ROOT_URL, "name": "learner-1"}
    by_id = {**PLAY, "context": {**PLAY["context"], "username": "", "user_id": 7}}
    assert _event(by_id, registry).tincan.actor["account"]["name"] == "learner-7"
    nobody = {**PLAY, "context": {**PLAY["context"], "username": "", "user_id": None}}
    assert _event(nobody, registry).tincan.actor["account"]["name"] == "anonymous"


def test_actor_name_can_be_computed_by_a_function():
    transformer = e2x.XapiTransformer(actor_name=lambda edx: f"user-{edx.user_id}")
    assert transformer.statements(PLAY)[0]["actor"]["account"]["name"] == "user-3"


def test_timestamps_are_given_in_utc():
    assert e2x.utc_timestamp("2023-08-22T20:16:25.500832Z") == "2023-08-22T20:16:25.500832+00:00"
    assert e2x.utc_timestamp("2023-08-22T22:16:25+02:00") == "2023-08-22T20:16:25+00:00"
    assert e2x.utc_timestamp("2014-06-19T21:50:33") == "2014-06-19T21:50:33+00:00"
    assert e2x.utc_timestamp("yesterday") == "yesterday"


def test_a_multi_part_problem_gives_a_parent_and_one_statement_per_part():
    event = {"name": "problem_check", "timestamp": "2023-08-03T06:31:39+00:00",
             "context": {"course_id": "course-v1:o+c+r", "username": "ann", "event_source": "server"},
             "data": {"problem_id": "block-v1:o+c+r+type@problem+block@p1", "grade": 1, "max_grade": 2,
                      "success": "incorrect",
                      "submission": {"p1_2_1": {"answer": "blue", "correct": True, "response_type": "optionresponse"},
                                     "p1_3_1": {"answer": ["a", "b"], "correct": False}}}}
    parent, *parts = e2x.XapiTransformer(lms_root_url="https://lms").statements(event)
    assert parent["object"]["objectType"] == "GroupActivity"
    assert parent["result"] == {"score": {"min": 0, "max": 2, "raw": 1, "scaled": 0.5}, "success": False}
    assert [p["object"]["id"] for p in parts] == ["https://lms/xblock/block-v1:o+c+r+type@problem+block@p1_2_1",
                                                  "https://lms/xblock/block-v1:o+c+r+type@problem+block@p1_3_1"]
    assert [p["result"] for p in parts] == [{"response": "blue", "success": True},
                                            {"response": '["a", "b"]', "success": False}]
    assert all(p["context"]["statement"] == {"objectType": "StatementRef", "id": parent["id"]} for p in parts)


@pytest.mark.parametrize("payload", [None, {}, [], "", "junk", "{\"id\": 3}", 17])
def test_every_mapped_type_survives_odd_payloads(payload):
    transformer = e2x.XapiTransformer()
    for name in e2x.MAPPING:
        for context in ({}, {"course_id": 5, "event_source": "browser", "referer": 3}, None):
            statements = transformer.statements({"name": name, "timestamp": None, "data": payload,
                                                 "context": context})
            assert statements and statements[0]["verb"]["id"], name


@pytest.mark.skipif(not DATA.is_dir(), reason=f"real test data not found at {DATA}")
def test_real_tracking_logs_transform():
    transformer = e2x.XapiTransformer()
    seen = 0
    for log in ("edx-analytics-pipeline/user_activity_tracking.log", "edx-analytics-pipeline/video_timeline.log",
                "edx-analytics-pipeline/problem_response_tracking.log", "event-routing-backends/tracking.log"):
        for line in (DATA / log).read_text(encoding="utf-8").splitlines():
            start = line.find("{")
            try:
                event = json.loads(line[start:]) if start >= 0 and not line.startswith("#") else None
            except ValueError:
                continue
            if isinstance(event, dict):
                for statement in transformer.statements(event):
                    assert statement["actor"]["account"]["name"] and statement["verb"]["id"]
                    seen += 1
    assert seen > 900


# -- the xapi source ----------------------------------------------------------

def test_statements_are_read_directly(registry):
    statement = {"id": "s-1", "actor": {"objectType": "Agent", "account": {"homePage": "https://x", "name": "amy"}},
                 "verb": {"id": "http://adlnet.gov/expapi/verbs/completed"},
                 "object": {"id": "https://x/activity/1"}, "result": {"completion": True},
                 "timestamp": "2024-01-02T03:04:05+00:00"}
    event = _event(statement, registry)
    assert event.tincan.statements == [statement] and event.tincan.statement == statement
    for name in ("actor", "verb", "object", "result", "timestamp"):
        assert getattr(event.tincan, name) == statement[name]
    assert event.tincan.context is None


def test_our_statements_read_back_as_the_same_properties(registry):
    edx = _event(PLAY, registry)
    xapi = _event(edx.tincan.statement, registry)
    for name in ("statement", "actor", "verb", "object", "result", "context", "timestamp"):
        assert getattr(xapi.tincan, name) == getattr(edx.tincan, name), name


def test_mapping_table_lists_every_mapped_type():
    rows = e2x.mapping_table()
    assert {row["event_type"] for row in rows} >= set(e2x.MAPPING)
    assert {row["follows"] for row in rows} == {"Open edX", "Ralph"}
    assert all(row["verb"].startswith("http") for row in rows)


def test_properties_are_described_for_event_properties_endpoint(registry):
    described = {(p["namespace"], p["name"]): p for p in registry.describe()}
    assert set(described) == {("tincan", n) for n in ("statements", "statement", "actor", "verb", "object",
                                                     "result", "context", "timestamp")}
    assert described[("tincan", "statements")]["sources"] == ["edx", "xapi"]
    assert all(p["doc"] for p in described.values())
