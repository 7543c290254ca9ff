"""A realtime handler filtered on the property ``spy.kind``; records what it gets."""
from sandbox import event_handler, query


@event_handler(filter={"spy.kind": "wanted"}, mode="realtime")
def record(db, events):
    """Keep each event's tag and ``evt.spy.kind``."""
    db["seen"].insert_many([{"tag": e["tag"], "kind": e.spy.kind} for e in events])


@query()
def seen(db):
    """The tags recorded, in order."""
    return [d["tag"] for d in db["seen"].find({}, {"_id": 0}).sort("_id", 1)]
