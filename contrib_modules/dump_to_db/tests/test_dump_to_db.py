"""The dump_to_db module, run in a real sandbox by the module harness."""
import uuid
from pathlib import Path

import pytest

from sandbox.errors import BadParameter
from sandbox.testing import ModuleHarness

pytestmark = pytest.mark.timeout(120)

MODULE = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def harness():
    with ModuleHarness(MODULE) as h:
        yield h


def _events(count: int, **fields) -> list[dict]:
    run = uuid.uuid4().hex
    return [{"id": f"{run}-{n}", "event_type": "play_video", "n": n,
             "context": {"course": "CS101"}, **fields} for n in range(count)]


def test_events_are_stored_as_they_came(harness):
    before = harness.query("dumped_count")
    events = _events(5, username="bob")
    result = harness.send_events(events)
    assert result["accepted"] == 5
    assert harness.query("dumped_count") == before + 5
    stored = {doc["id"]: doc for doc in harness.db["event_log"].find({"username": "bob"}, {"_id": 0})}
    for event in events:
        assert stored[event["id"]] == event


def test_dumped_events_gives_the_latest_in_order_without_ids(harness):
    events = _events(12, username="carol")
    harness.send_events(events)
    latest = harness.query("dumped_events", limit=3)
    assert latest == events[-3:]
    assert all("_id" not in doc for doc in latest)
    assert harness.query("dumped_events") == events[-10:]


def test_duplicate_events_are_stored_once(harness):
    events = _events(3, username="dave")
    harness.send_events(events)
    before = harness.query("dumped_count")
    result = harness.send_events(events)
    assert result["duplicates"] == 3
    assert harness.query("dumped_count") == before


@pytest.mark.parametrize("limit", ["0", "1001", "ten"])
def test_a_bad_limit_names_the_parameter(harness, limit):
    with pytest.raises(BadParameter) as excinfo:
        harness.query("dumped_events", limit=limit)
    assert excinfo.value.param == "limit"


def test_events_delivered_again_are_stored_once_in_log_order(harness):
    # As after a sandbox crash: the handler gets logged events a second time.
    start = harness.log_head()
    events = _events(4, username="erin")
    harness.send_events(events)
    before = harness.query("dumped_count")
    assert harness.redeliver(start) >= 4  # log positions need not be dense
    assert harness.query("dumped_count") == before
    assert harness.query("dumped_events", limit=4) == events
