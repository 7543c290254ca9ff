"""raise_handler, fixed: it keeps the identity of every event it accepts."""
from sandbox import event_handler, query


@query()
def raise_handler_status():
    return "fixed"


@event_handler(filter={"kind": "raise_me"})
def always_raises(db, events):
    for evt in events:
        db["accepted"].replace_one({"_id": evt.meta["id"]},
                                   {"_id": evt.meta["id"], "tag": str(evt.get("tag", ""))}, upsert=True)


@query()
def raise_handler_accepted(db, tag: str):
    """:returns: the identities of the events of ``tag`` the fixed handler accepted."""
    return sorted(d["_id"] for d in db["accepted"].find({"tag": tag}))
