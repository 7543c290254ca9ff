"""Pipeline test module: a handler that fails on ``"poison": true`` events until fixed.

Used by ``tests/test_event_pipeline.py``; not a module to deploy. The query
``fix`` stores ``{"_id": "fixed"}`` in ``config``; from then on poison events are
accepted too.
"""
from pymongo import UpdateOne

from sandbox import event_handler, query


@event_handler(filter={"kind": "poison-test"})
def check(db, events):
    """Record each event; raise ValueError on a poison event unless fixed."""
    fixed = db["config"].find_one({"_id": "fixed"}) is not None
    done = []
    failure = None
    for e in events:
        if e.get("poison") and not fixed:
            failure = ValueError(f"poisoned event {e.meta['id']}")
            break
        done.append(UpdateOne({"_id": "e|" + e.meta["id"]},
                              {"$inc": {"n": 1}, "$set": {"poison": bool(e.get("poison")),
                                                          "tag": str(e.get("tag", ""))}},
                              upsert=True))
    if done:
        db["seen"].bulk_write(done, ordered=False)
    if failure is not None:
        raise failure


@query()
def fix(db):
    """From now on, accept poison events. :returns: ``True``."""
    db["config"].update_one({"_id": "fixed"}, {"$set": {"fixed": True}}, upsert=True)
    return True


@query()
def good_seen(db, tag: str):
    """:returns: how many distinct non-poison events of ``tag`` were processed."""
    result = list(db["seen"].aggregate([{"$match": {"tag": tag, "poison": False}}, {"$count": "n"}]))
    return result[0]["n"] if result else 0


@query()
def poison_times(db, tag: str):
    """:returns: ``{identity: times processed}`` for the events of ``tag``."""
    return {d["_id"][2:]: d["n"] for d in db["seen"].find({"tag": tag}).limit(10_000)}


@query()
def seen(db, id: str):
    """:returns: whether the event of identity ``id`` was processed."""
    return db["seen"].find_one({"_id": "e|" + id}) is not None
