"""Pipeline test module: a handler with ``backfill=False`` over ``backfill`` events.

Used by ``tests/test_event_pipeline.py`` (loaded after events were logged); not a
module to deploy.
"""
from pymongo import UpdateOne

from sandbox import event_handler, query


@event_handler(filter={"kind": "backfill"}, backfill=False)
def record_off(db, events):
    """Record each received event's identity."""
    if events:
        db["seen"].bulk_write([UpdateOne({"_id": "e|" + e.meta["id"]}, {"$inc": {"n": 1}}, upsert=True)
                               for e in events], ordered=False)


@query()
def backfill_off_ids(db):
    """:returns: the identities of the events received."""
    return sorted(d["_id"][2:] for d in db["seen"].find({}, {"_id": 1}).limit(10_000))
