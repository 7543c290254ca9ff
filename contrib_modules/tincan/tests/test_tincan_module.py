"""The tincan module run by the harness: its queries, and its data layer loaded by hostd."""
import json
from pathlib import Path

import pytest

from sandbox.errors import BadParameter
from sandbox.testing import ModuleHarness

pytestmark = pytest.mark.timeout(120)

MODULE = Path(__file__).resolve().parents[1]
SEEK = {"event_type": "seek_video", "event_source": "browser", "username": "ann", "host": "lms.example.org",
        "time": "2014-06-19T21:50:33.316853+00:00", "context": {"course_id": "course-v1:o+c+r"},
        "event": json.dumps({"id": "v1", "old_time": 10.12345, "new_time": 20, "type": "onSlideSeek"})}


@pytest.fixture(scope="module")
def harness():
    with ModuleHarness(MODULE) as h:
        yield h


def test_hostd_loads_the_data_layer(harness):
    properties = {p["name"] for p in harness.host.modules.snapshot().properties if p["namespace"] == "tincan"}
    assert {"statement", "statements", "actor", "verb", "object", "result", "context", "timestamp"} <= properties


def test_mapping_query_lists_what_is_mapped(harness):
    rows = harness.query("tincan_mapping")
    by_type = {row["event_type"]: row for row in rows}
    assert by_type["play_video"] == {"event_type": "play_video", "verb": "https://w3id.org/xapi/video/verbs/played",
                                     "follows": "Open edX"}
    assert by_type["page_close"]["follows"] == "Ralph"
    assert "seq_goto" not in by_type


def test_statements_query_reads_a_tracking_log_line(harness):
    [statement] = harness.query("tincan_statements", event=json.dumps(SEEK))
    assert statement["verb"]["id"] == "https://w3id.org/xapi/video/verbs/seeked"
    assert statement["result"]["extensions"] == {"https://w3id.org/xapi/video/extensions/time-from": 10.123,
                                                 "https://w3id.org/xapi/video/extensions/time-to": 20.0}
    assert statement["actor"]["account"] == {"homePage": "https://lms.example.org", "name": "ann"}


def test_statements_query_returns_statements_as_they_are(harness):
    statement = {"actor": {"mbox": "mailto:a@example.org"}, "verb": {"id": "http://x/v"}, "object": {"id": "http://x/o"}}
    assert harness.query("tincan_statements", event=json.dumps(statement)) == [statement]


@pytest.mark.parametrize("event", ["not json", "[1]", json.dumps({"hello": "world"})])
def test_statements_query_refuses_what_it_cannot_read(harness, event):
    with pytest.raises(BadParameter) as excinfo:
        harness.query("tincan_statements", event=event)
    assert excinfo.value.param == "event"
