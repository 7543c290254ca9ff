"""Pipeline test module: a batch handler called every second; records each call's size.

Used by ``tests/test_event_pipeline.py``; not a module to deploy.
"""
import time

from sandbox import event_handler, query


@event_handler(filter={"kind": "batch"}, mode="batch", every=1)
def batch(db, events):
    """Record one document per call: how many events it got."""
    db["calls"].insert_one({"size": len(events), "at": time.time()})


@query()
def calls(db):
    """:returns: the sizes of the calls so far, oldest first."""
    return [d["size"] for d in db["calls"].find({}, {"size": 1}).sort("at", 1).limit(10_000)]
