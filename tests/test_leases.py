"""The parts that let several nodes share one store, against a real embedded store: the
gap-aware log reader, void seqs, leases and how they spread, partitions, placement."""
import random
import threading
import time

import pytest

from hostd.cluster import ModulePlacement
from hostd.eventlog import EventLog
from hostd.gaps import GapWatch
from hostd.leases import LeaseKeeper, LeaseTable, shares
from hostd.partitions import Partitioner, partition_key, partition_of
from hostd.store import connect
from sandbox import event_handler
from sandbox.errors import ModuleLoadError

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def db(store_url, request):
    client = connect(store_url)
    database = client[f"t_{request.node.name[:40].lower()}"]
    yield database
    client.drop_database(database.name)
    client.close()


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


# -- the log with several appenders --------------------------------------------

def test_three_appenders_and_a_gap_aware_reader_nothing_skipped_nothing_twice(store_url, db):
    clients = [connect(store_url) for _ in range(3)]
    logs = [EventLog(c[db.name]) for c in clients]
    logs[0].ensure_indexes()
    done = threading.Event()
    read, watch = [], GapWatch(grace_s=60.0, voids_between=logs[0].voids_between)

    def append(log, node):
        rng = random.Random(node)
        for batch in range(60):
            log.append([{"id": f"{node}-{batch}-{n}"} for n in range(rng.randint(1, 8))], "http")

    def consume():
        position = 0
        while True:
            finished = done.is_set()
            page = watch.contiguous(position, logs[0].read_after(position, 50))
            read.extend(d["eid"] for d in page)
            position = page[-1]["seq"] if page else position
            if finished and position >= logs[0].head():
                return
            time.sleep(0.001)

    reader = threading.Thread(target=consume)
    reader.start()
    writers = [threading.Thread(target=append, args=(log, n)) for n, log in enumerate(logs)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    reader.join(120)
    logged = [d["eid"] for d in logs[0].events.find({}, {"eid": 1}).sort("seq", 1).limit(100_000)]
    assert len(read) == len(set(read)), "an event was read twice"
    assert read == logged, f"{len(set(logged) - set(read))} events skipped"
    assert watch.skipped == 0
    for client in clients:
        client.close()


def test_the_seqs_of_duplicates_are_void_and_readers_step_over_them_at_once(db):
    log = EventLog(db)
    log.ensure_indexes()
    log.append([{"n": 1}, {"n": 3}], "http")
    log.append([{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}], "http")
    log.append([{"n": 5}], "http")
    docs = log.read_after(0, 100)
    assert docs[-1]["seq"] - docs[0]["seq"] + 1 > len(docs)  # the duplicates' seqs are holes
    watch = GapWatch(grace_s=3600.0, voids_between=log.voids_between)
    assert [d["event"]["n"] for d in watch.contiguous(0, docs)] == [1, 3, 0, 2, 4, 5]
    assert watch.skipped == 0


def test_a_seq_whose_writer_died_is_waited_for_then_skipped_from_when_it_was_first_seen(db):
    log = EventLog(db)
    log.ensure_indexes()
    log.append([{"n": 0}], "http")
    log._reserve(2)                       # an appender reserved two seqs and died
    log.append([{"n": 1}, {"n": 2}], "http")
    docs = log.read_after(0, 100)
    clock = FakeClock()
    watch = GapWatch(grace_s=10.0, voids_between=log.voids_between, clock=clock)
    assert [d["event"]["n"] for d in watch.contiguous(0, docs)] == [0]
    clock.now += 9.0
    assert [d["event"]["n"] for d in watch.contiguous(docs[0]["seq"], docs[1:])] == []
    clock.now += 1.5
    assert [d["event"]["n"] for d in watch.contiguous(docs[0]["seq"], docs[1:])] == [1, 2]
    assert watch.skipped == 2
    # another consumer behind the same gap steps over it without waiting again
    assert [d["event"]["n"] for d in watch.contiguous(0, docs)] == [0, 1, 2]


def test_a_gap_filled_within_the_grace_is_delivered(db):
    log = EventLog(db)
    log.ensure_indexes()
    first = log._reserve(1)
    log.append([{"n": 1}], "http")
    watch = GapWatch(grace_s=3600.0, voids_between=log.voids_between)
    assert watch.contiguous(0, log.read_after(0, 10)) == []
    log.events.insert_one({"seq": first, "eid": "i|late", "source": "http", "received": 0.0, "event": {"n": 0}})
    assert [d["event"]["n"] for d in watch.contiguous(0, log.read_after(0, 10))] == [0, 1]


# -- leases -------------------------------------------------------------------------

def test_a_lease_has_one_holder_until_it_expires(db):
    table = LeaseTable(db)
    assert table.take("h|m|h", "a|1", "a", 10.0, now=100.0)
    assert not table.take("h|m|h", "b|1", "b", 10.0, now=105.0)
    assert table.renew("h|m|h", "a|1", 10.0, now=105.0)
    assert not table.take("h|m|h", "b|1", "b", 10.0, now=114.0)   # renewed until 115
    assert table.take("h|m|h", "b|1", "b", 10.0, now=116.0)
    assert not table.renew("h|m|h", "a|1", 10.0, now=117.0)        # the late holder lost it
    assert table.all()["h|m|h"]["node"] == "b"


def test_a_reserved_lease_goes_to_the_node_it_is_reserved_for(db):
    table = LeaseTable(db)
    assert table.take("x", "a|1", "a", 10.0, now=100.0)
    table.reserve("x", "a|1", "b", 10.0, now=101.0)
    assert not table.take("x", "c|1", "c", 10.0, now=111.0)   # expired, but reserved for b
    assert table.take("x", "b|1", "b", 10.0, now=111.0)
    table.release(["x"], "b|1")
    assert table.take("x", "c|1", "c", 10.0, now=112.0)       # given back: anyone


def test_each_group_of_names_has_a_share_per_node():
    parts = {f"h|m|h#{k}" for k in range(4)}
    share = shares({"a": parts | {"only-a"}, "b": set(parts), "c": set(parts)})
    assert share["only-a"] == (("a",), 1)
    assert all(share[name] == (("a", "b", "c"), 2) for name in parts)


def test_keepers_share_the_leases_and_the_survivor_takes_them_all(db):
    names = {f"h|m|h#{k}" for k in range(4)} | {"c|m|tick"}
    table = LeaseTable(db)
    a = LeaseKeeper(table, "a", "a|1", lease_s=1.0)
    b = LeaseKeeper(table, "b", "b|1", lease_s=1.0)
    a.want(names)
    b.want(names)

    def shared():
        for keeper in (a, b):
            keeper.tick()
        held = {keeper.node: {n for n in names if keeper.epoch(n) is not None} for keeper in (a, b)}
        return held if held["a"] and held["b"] and not held["a"] & held["b"] and \
            held["a"] | held["b"] == names else None
    held = _poll(lambda: (lambda h: h if h and {len(h["a"]), len(h["b"])} == {2, 3} else None)(shared()),
                 "the leases shared evenly between a and b")
    assert not held["a"] & held["b"]
    # b dies (stops renewing): a takes everything once b's leases expired
    _poll(lambda: (a.tick() or True) and all(a.epoch(n) is not None for n in names), "a holding every lease")
    assert all(a.holder(n) == "a" for n in names)


def test_a_keeper_whose_renewals_stall_stops_feeding_before_its_lease_expires(db):
    keeper = LeaseKeeper(LeaseTable(db), "a", "a|1", lease_s=2.0)
    keeper.want({"x"})
    keeper.tick()
    assert keeper.epoch("x") is not None
    until = LeaseTable(db).all()["x"]["until"]
    _poll(lambda: keeper.epoch("x") is None, "the lease no longer usable")   # no tick: no renewal
    assert time.time() < until   # it stopped feeding while nobody else could take the lease yet


def _poll(predicate, what, timeout_s=30.0):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- partitions and placement ----------------------------------------------------------

def test_partition_keys_of_edx_and_xapi_events():
    assert partition_key({"username": "ann", "context": {"user_id": 7}}, "user") == "ann"
    assert partition_key({"username": "", "context": {"user_id": 7}}, "user") == "7"
    assert partition_key({"actor": {"account": {"name": "bob"}}}, "user") == "bob"
    assert partition_key({"actor": {"mbox": "mailto:c@x"}}, "user") == "mailto:c@x"
    assert partition_key({"event": "{}", "context": {}}, "user") is None
    assert partition_key({"context": {"course_id": "c1"}, "event": {"id": "p"}}, "resource") == "c1"
    assert partition_key({"object": {"id": "http://a/1"}}, "resource") == "http://a/1"
    assert partition_key({"event": {"id": "p"}}, "resource") == "p"


def test_partitions_are_stable_and_keyless_events_go_to_partition_0():
    events = [{"username": f"u{n}"} for n in range(200)]
    parts = [partition_of(e, "user", 4) for e in events]
    assert set(parts) == {0, 1, 2, 3}
    assert parts == [partition_of(e, "user", 4) for e in events]
    assert partition_of({"username": "u1"}, "user", 4) == 2  # CRC-32: the same on every node, every run
    assert partition_of({"other": 1}, "user", 4) == 0


def test_a_partitioned_handler_is_fed_by_its_partitions():
    class Route:
        module, name, mode = "m", "h", "queued"
        key = ("m", "h")

        def __init__(self, options):
            self.options = options
            self.matches = lambda doc: True

    plain, by_user = Route({}), Route({"per_user": True, "partitions": 3})
    partitioner = Partitioner(default_count=4)
    consumers = partitioner.consumers([plain, by_user])
    assert [c.name for c in consumers] == ["h", "h#0", "h#1", "h#2"]
    assert all(c.endpoint == "h" for c in consumers[1:])
    assert partitioner.consumers([plain, by_user])[1] is consumers[1]
    doc = {"event": {"username": "u1"}}
    assert [c.matches(doc) for c in consumers[1:]].count(True) == 1
    assert len(partitioner.consumers([Route({"per_resource": True})])) == 4


@pytest.mark.parametrize("options, message", [
    ({"per_user": True, "per_resource": True}, "not both"),
    ({"partitions": 3}, "needs per_user"),
    ({"per_user": True, "partitions": 0}, "from 1 to 256"),
    ({"per_user": True, "mode": "realtime"}, "not partitioned"),
])
def test_bad_partition_options_fail_at_load(options, message):
    with pytest.raises(ModuleLoadError, match=message):
        event_handler(**options)


def test_placement_by_names_and_patterns():
    placement = ModulePlacement(["course_*", "tally"], ["course_beta"])
    assert placement.runs("course_alpha") and placement.runs("tally")
    assert not placement.runs("course_beta") and not placement.runs("other")
    assert ModulePlacement(["*"], []).runs("anything")
