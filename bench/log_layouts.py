"""How fast the embedded store takes event-log writes, by document layout and write concern.

Starts nx-27017 (as hostd does) in a temporary data dir and inserts the same
edX-like events, in batches of ``--batch``, several times, alternating layouts:

* ``plain``: the events themselves (the ceiling of bench/ingest.py);
* ``log``: hostd's log documents (``seq`` and ``eid`` unique indexes, ObjectId ``_id``);
* ``id-key``: the same with ``_id = identity`` and only ``seq`` indexed besides;
* ``chunk``: one document per batch holding its events (``seq`` indexed).

each with the default write concern (w=1) and with ``j=True`` (what "durably
logged" costs). Prints events/s medians. It backs the figures in the notes of
issue 3: nx syncs per *document* under ``j=True``, so a journaled log of one
document per event stays near a third of the plain ``insert_many`` ceiling.

    python bench/log_layouts.py [--runs 3] [--events 10000] [--batch 500]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pymongo

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hostd.store import DataDirLock, EmbeddedStore  # noqa: E402
from ingest import batches, make_events  # noqa: E402

LAYOUTS = ("plain", "log", "id-key", "chunk")


def documents(layout: str, chunk: list[dict], first_seq: int) -> list[dict]:
    """:returns: the documents ``layout`` stores for one batch of events."""
    if layout == "plain":
        return [dict(event) for event in chunk]
    if layout == "chunk":
        return [{"seq": first_seq, "events": [{"eid": f"i|{e['event_id']}", "event": e} for e in chunk]}]
    key = "_id" if layout == "id-key" else "eid"
    return [{key: f"i|{e['event_id']}", "seq": first_seq + n, "source": "http", "received": time.time(),
             "event": e} for n, e in enumerate(chunk)]


def measure(client: pymongo.MongoClient, layout: str, journal: bool, events: list[dict], batch: int) -> float:
    """:returns: events/s inserting ``events`` in ``layout`` into a fresh database."""
    db = client[f"layout_{layout.replace('-', '_')}_{int(journal)}_{uuid.uuid4().hex[:8]}"]
    coll = db.get_collection("log", write_concern=pymongo.WriteConcern(w=1, j=journal))
    if layout != "plain":
        coll.create_index([("seq", 1)], unique=True, name="seq_unique")
    if layout == "log":
        coll.create_index([("eid", 1)], unique=True, name="eid_unique")
    start, seq = time.perf_counter(), 1
    for chunk in batches(events, batch):
        coll.insert_many(documents(layout, chunk, seq), ordered=True)
        seq += len(chunk)
    elapsed = time.perf_counter() - start
    client.drop_database(db.name)
    return len(events) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    data_dir = tempfile.mkdtemp(prefix="insights-layouts-")
    lock = DataDirLock(data_dir)
    lock.acquire()
    store = EmbeddedStore(data_dir)
    results: dict = {(layout, j): [] for layout in LAYOUTS for j in (False, True)}
    try:
        client = pymongo.MongoClient(store.start())
        for run in range(args.runs):
            order = list(results) if run % 2 == 0 else list(reversed(results))
            for layout, journal in order:
                events = make_events(args.events, 300, seed=run * 100 + len(results[(layout, journal)]))
                results[(layout, journal)].append(measure(client, layout, journal, events, args.batch))
        client.close()
    finally:
        store.stop()
        lock.release()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"events/s, medians of {args.runs} runs; {args.events} events in batches of {args.batch}")
    print(f"{'layout':8} {'w=1':>8} {'j=True':>8}")
    for layout in LAYOUTS:
        w1, j = (statistics.median(results[(layout, flag)]) for flag in (False, True))
        print(f"{layout:8} {w1:8.0f} {j:8.0f}")
    ceiling = statistics.median(results[("plain", False)])
    print(f"journaled log / plain w=1 ceiling: {statistics.median(results[('log', True)]) / ceiling:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
