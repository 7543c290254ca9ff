"""Pipeline test module: a realtime handler (``rt`` events; ``rt-slow`` ones take 3 s).

Used by ``tests/test_event_pipeline.py``; not a module to deploy.
"""
import time

from pymongo import UpdateOne

from sandbox import event_handler, query


@event_handler(filter={"kind": {"$in": ["rt", "rt-slow"]}}, mode="realtime")
def rt(db, events):
    """Record each event's identity; first sleep 3 s if the batch holds an ``rt-slow`` event."""
    if any(e.get("kind") == "rt-slow" for e in events):
        time.sleep(3)
    if events:
        db["rt"].bulk_write([UpdateOne({"_id": "e|" + e.meta["id"]}, {"$inc": {"n": 1}}, upsert=True)
                             for e in events], ordered=False)


@query()
def rt_seen(db, id: str):
    """:returns: whether the realtime handler processed the event of identity ``id``."""
    return db["rt"].find_one({"_id": "e|" + id}) is not None
