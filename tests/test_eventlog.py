"""The event log against a real embedded store: identities, duplicates, order, re-sends."""
import pytest

from hostd.eventlog import EventLog, event_identity
from hostd.store import connect

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def log(store_url, request):
    client = connect(store_url)
    db = client[f"t_{request.node.name[:40].lower()}"]
    eventlog = EventLog(db)
    eventlog.ensure_indexes()
    yield eventlog
    client.drop_database(db.name)
    client.close()


def _seqs(log):
    return [d["seq"] for d in log.events.find({}, {"seq": 1}).sort("seq", 1).limit(1000)]


def test_identity_is_the_id_field_else_a_hash_of_canonical_json():
    assert event_identity({"id": "abc", "x": 1}) == "abc"
    assert event_identity({"event_id": 7}) == "7"
    assert event_identity({"b": 1, "a": 2}) == event_identity({"a": 2, "b": 1})
    assert event_identity({"a": 1}) != event_identity({"a": 2})


def test_new_events_are_logged_in_order(log):
    result = log.append([{"n": i} for i in range(5)], "http")
    assert result["accepted"] == 5 and result["duplicates"] == 0
    assert result["ids"] == [event_identity({"n": i}) for i in range(5)]
    docs = log.read_after(0, 10)
    assert [d["event"]["n"] for d in docs] == list(range(5))
    assert [d["seq"] for d in docs] == sorted(d["seq"] for d in docs)
    assert all(d["source"] == "http" for d in docs)
    assert log.head() == docs[-1]["seq"] == result["last_seq"]


def test_a_batch_sent_twice_is_all_duplicates(log):
    events = [{"n": i} for i in range(20)]
    log.append(events, "http")
    again = log.append(events, "http")
    assert again["accepted"] == 0 and again["duplicates"] == 20 and again["new_ids"] == []
    assert again["last_seq"] is None
    assert len(_seqs(log)) == 20


def test_a_mixed_batch_logs_only_the_new_events(log):
    log.append([{"n": 1}, {"n": 3}], "http")
    result = log.append([{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}], "http")
    assert result["accepted"] == 3 and result["duplicates"] == 2
    assert result["new_ids"] == [event_identity({"n": n}) for n in (0, 2, 4)]
    assert len(result["ids"]) == 5
    events = [d["event"]["n"] for d in log.read_after(0, 100)]
    assert sorted(events) == [0, 1, 2, 3, 4] and events[:2] == [1, 3]
    assert log.head() == result["last_seq"]


def test_the_same_event_twice_in_one_request_is_logged_once(log):
    result = log.append([{"n": 9}, {"n": 9}], "http")
    assert result["accepted"] == 1 and result["duplicates"] == 1
    assert result["ids"][0] == result["ids"][1]


def test_resending_after_an_unknown_outcome_counts_our_own_writes_as_written(log):
    first = log._reserve(3)
    docs = [{"seq": first + n, "eid": f"i|resend-{n}", "source": "http", "received": 0.0, "event": {"n": n}}
            for n in range(3)]
    log.events.insert_many(docs[:2])  # the first attempt got that far, then the connection broke
    written = log._insert([dict(d) for d in docs])
    assert [d["seq"] for d in written] == [d["seq"] for d in docs]
    assert _seqs(log) == [d["seq"] for d in docs]


def test_reads_after_a_position_are_limited_and_ordered(log):
    log.append([{"n": i} for i in range(30)], "http")
    page = log.read_after(0, 10)
    assert len(page) == 10
    rest = log.read_after(page[-1]["seq"], 100)
    assert len(rest) == 20 and rest[0]["seq"] > page[-1]["seq"]
