"""Pipeline test module: records the ``from`` of each ``chain-derived`` event.

Used by ``tests/test_event_pipeline.py``; not a module to deploy.
"""
from pymongo import UpdateOne

from sandbox import event_handler, query


@event_handler(filter={"kind": "chain-derived"})
def derived(db, events):
    """Record each derived event's origin and log source."""
    if events:
        db["derived"].bulk_write([UpdateOne({"_id": "f|" + str(e.get("from"))},
                                            {"$inc": {"n": 1}, "$set": {"source": e.meta.get("source")}},
                                            upsert=True) for e in events], ordered=False)


@query()
def derived_from(db):
    """:returns: the ``from`` values of the derived events received."""
    return sorted(d["_id"][2:] for d in db["derived"].find({}, {"_id": 1}).limit(10_000))


@query()
def derived_meta(db, origin: str):
    """:returns: ``{"n", "source"}`` of the derived event made from ``origin`` (None: not seen)."""
    doc = db["derived"].find_one({"_id": "f|" + origin})
    return None if doc is None else {"n": doc["n"], "source": doc.get("source")}
