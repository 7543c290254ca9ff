"""Pipeline test module: records every ``collect`` event it receives, and how often.

Used by ``tests/test_event_pipeline.py``; not a module to deploy. An event may
carry ``"sleep": seconds``: the handler sleeps that long (the batch's largest)
after recording the batch, so a SIGKILL can land between the handler's writes and
hostd's acknowledgement. ``"tag"`` groups a test's events.
"""
import time

from pymongo import UpdateOne

from sandbox import event_handler, query


@event_handler(filter={"kind": "collect"})
def collect(db, events):
    """Count each received event (by identity) in ``seen``."""
    if not events:
        return
    db["seen"].bulk_write([UpdateOne({"_id": "e|" + e.meta["id"]},
                                     {"$inc": {"n": 1}, "$set": {"tag": str(e.get("tag", ""))}},
                                     upsert=True) for e in events], ordered=False)
    pause = max(float(e.get("sleep") or 0) for e in events)
    if pause:
        time.sleep(pause)


def _match(tag):
    return {"tag": tag} if tag else {"n": {"$gte": 1}}


@query()
def distinct_seen(db, tag: str = ""):
    """:returns: how many distinct events (of ``tag``, if given) the handler received."""
    result = list(db["seen"].aggregate([{"$match": _match(tag)}, {"$count": "n"}]))
    return result[0]["n"] if result else 0


@query()
def times_seen(db, id: str):
    """:returns: how many times the event of identity ``id`` was received."""
    doc = db["seen"].find_one({"_id": "e|" + id})
    return doc["n"] if doc else 0


@query()
def max_times(db, tag: str = ""):
    """:returns: the most times one event (of ``tag``) was received (0: none)."""
    docs = list(db["seen"].find(_match(tag), {"n": 1}).sort("n", -1).limit(1))
    return docs[0]["n"] if docs else 0


@query()
def seen_ids(db, tag: str):
    """:returns: the identities of the events of ``tag`` received."""
    return sorted(d["_id"][2:] for d in db["seen"].find({"tag": tag}, {"_id": 1}).limit(100_000))
