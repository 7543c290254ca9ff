"""The module cache (``cache``): kept in the module's database, shared, persistent, expiring.

The first half runs :class:`sandbox.cache.CacheStore` against a real embedded
store, including the store operations it relies on (conditional upsert of a
lease, float ranges, binary values). The second half runs the probe module in
real sandboxes through the harness.
"""
from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy
import pytest

from hostd.store import connect
from sandbox.cache import COLLECTION, Cache, CacheStore, cache_id, pack, unpack
from sandbox.testing import ModuleHarness
from running_hostd import wait_until

pytestmark = pytest.mark.timeout(180)

PROBE = Path(__file__).parent / "memo_modules" / "memo_probe"


class Clock:
    """A clock the test moves by hand (the store itself is real)."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def client(store_url):
    mongo = connect(store_url)
    yield mongo
    mongo.close()


@pytest.fixture
def collection(client, request):
    return client["cache_" + request.node.name.removeprefix("test_").lower()[:40]][COLLECTION]


# -- the store -------------------------------------------------------------------

def test_values_round_trip_through_msgpack_and_binary(collection):
    cache = Cache(CacheStore(collection))
    value = {"a": [1, 2.5, "x", None, True], "nested": {"b": b"\x00\xff"}, "n": numpy.arange(3),
             "scalar": numpy.float64(1.5)}
    cache.set("k", value, 60)
    assert cache.get("k") == {"a": [1, 2.5, "x", None, True], "nested": {"b": b"\x00\xff"}, "n": [0, 1, 2],
                              "scalar": 1.5}
    assert cache.get("absent") is None and cache.get("absent", default=7) == 7
    cache.set("k", "overwritten", 60)
    assert cache.get("k") == "overwritten"
    cache.delete("k")
    cache.delete("k")  # missing is fine
    assert cache.get("k", "gone") == "gone"


def test_keys_map_to_safe_ids(collection):
    cache = Cache(CacheStore(collection))
    keys = ["2024-03-01", "2024-03-01T10:00:00Z|x", "x" * 5000, "é ü 中", "a\x00b", "", "c|x", "h|x"]
    for number, key in enumerate(keys):
        cache.set(key, number, 60)
    assert [cache.get(key) for key in keys] == list(range(len(keys)))
    ids = [doc["_id"] for doc in collection.find({}, {"_id": 1})]
    assert len(ids) == len(keys)
    assert all(i.startswith(("c|", "h|")) and len(i) <= 202 for i in ids)
    assert cache_id("2024-03-01") == "c|2024-03-01"
    with pytest.raises(TypeError, match="str"):
        cache.set(3, "x", 60)


def test_values_msgpack_cannot_carry_are_refused(collection):
    cache = Cache(CacheStore(collection))
    with pytest.raises(TypeError):
        cache.set("k", object(), 60)
    assert cache.get("k") is None


def test_an_expired_entry_reads_as_missing_and_is_deleted(collection):
    clock = Clock()
    cache = Cache(CacheStore(collection, clock=clock))
    cache.set("short", 1, 10)
    cache.set("forever", 2, None)
    clock.now += 9
    assert cache.get("short") == 1
    clock.now += 1
    assert cache.get("short") is None
    assert collection.find_one({"_id": "c|short"}) is None
    clock.now += 10 ** 6
    assert cache.get("forever") == 2


def test_the_sweep_deletes_expired_entries_and_lapsed_leases_only(collection):
    clock = Clock()
    store = CacheStore(collection, clock=clock)
    cache = Cache(store)
    cache.set("old", 1, 5)
    cache.set("new", 2, 500)
    cache.set("forever", 3, None)
    assert store.acquire("m|dead-owner", "someone", 5) is not None
    assert store.acquire("m|live-owner", "someone", 500) is not None
    clock.now += 10
    assert store.sweep() == 2
    assert sorted(doc["_id"] for doc in collection.find({}, {"_id": 1})) == ["c|forever", "c|new", "m|live-owner"]


def test_a_lease_is_taken_by_one_owner_until_released_or_lapsed(collection):
    clock = Clock()
    store = CacheStore(collection, clock=clock)
    first = store.acquire("m|k", "a", 30)
    assert first is not None and first.data is None and first.leased
    assert store.acquire("m|k", "b", 30) is None
    assert store.read("m|k").leased and store.read("m|k").data is None
    store.release("m|k", "b")  # not b's: left alone
    assert store.acquire("m|k", "b", 30) is None
    store.release("m|k", "a")
    assert not store.read("m|k").leased
    assert store.acquire("m|k", "b", 30) is not None
    clock.now += 31  # b died: its lease lapses
    assert not store.read("m|k").leased
    assert store.acquire("m|k", "c", 30) is not None


def test_one_of_many_racing_processes_gets_the_lease(store_url, collection):
    """Each racer has its own client, as separate processes would."""
    clients = [connect(store_url) for _ in range(4)]
    try:
        stores = [CacheStore(c[collection.database.name][COLLECTION]) for c in clients]
        barrier = threading.Barrier(len(stores))

        def race(store, owner):
            won = []
            for key in range(20):
                barrier.wait()
                if store.acquire(f"m|race-{key}", owner, 60) is not None:
                    won.append(key)
            return won
        with ThreadPoolExecutor(len(stores)) as pool:
            winners = list(pool.map(race, stores, "abcd"))
    finally:
        for c in clients:
            c.close()
    assert sorted(key for won in winners for key in won) == list(range(20))


def test_a_lease_taken_where_a_fresh_value_landed_returns_it(collection):
    store = CacheStore(collection)
    store.write("m|k", pack([1, 2]), 60)
    taken = store.acquire("m|k", "a", 30)
    assert unpack(taken.data) == [1, 2]
    store.write("m|k", pack("new"), 60)  # writing ends the lease
    assert store.read("m|k") == type(taken)(pack("new"), False)


# -- through real sandboxes ---------------------------------------------------------

def test_a_value_outlives_its_sandbox(tmp_path):
    with ModuleHarness(PROBE, data_dir=tmp_path / "data") as h:
        h.query("remember", key="survivor", value={"kept": [1, 2]}, timeout=600)
        first = h.status()["pid"]
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: h.status()["state"] == "running" and h.status()["pid"] not in (None, first), 60,
                   what="the sandbox restarted")
        assert h.query("recall", key="survivor") == {"value": {"kept": [1, 2]}}


def test_a_value_expires(tmp_path):
    with ModuleHarness(PROBE, data_dir=tmp_path / "data") as h:
        h.query("remember", key="brief", value="soon gone", timeout=1)
        h.query("remember", key="lasting", value="still here", timeout=600)
        wait_until(lambda: h.query("recall", key="brief") == {"value": "<missing>"}, 30, interval_s=0.2,
                   what="the entry to expire")
        assert h.db[COLLECTION].find_one({"_id": "c|brief"}) is None  # deleted when read expired
        assert h.query("recall", key="lasting") == {"value": "still here"}
        h.query("forget", key="lasting")
        assert h.query("recall", key="lasting") == {"value": "<missing>"}


def test_two_processes_of_a_module_share_the_cache(tmp_path):
    with ModuleHarness(PROBE, data_dir=tmp_path / "one") as one:
        with ModuleHarness(PROBE, data_dir=tmp_path / "two", mongo_url=one.host.storage.url) as two:
            assert one.status()["pid"] != two.status()["pid"]
            one.query("remember", key="shared", value=[1, "two"], timeout=600)
            assert two.query("recall", key="shared") == {"value": [1, "two"]}
            two.query("forget", key="shared")
            assert one.query("recall", key="shared") == {"value": "<missing>"}
