"""bench/ingest.py, queued handler A: events per user, one bulk write per batch."""
from pymongo import UpdateOne

from sandbox import event_handler, query

COUNTS = "counts"
TOTAL_ID = "total|all"


@event_handler()
def count_per_user(db, events):
    """``$inc`` a counter per username (``u|<name>``) and the total, in ONE ``bulk_write``."""
    if not events:
        return
    per_key: dict[str, int] = {}
    for evt in events:
        key = f"u|{evt.get('username')}"
        per_key[key] = per_key.get(key, 0) + 1
    writes = [UpdateOne({"_id": TOTAL_ID}, {"$inc": {"count": len(events)}}, upsert=True)]
    writes += [UpdateOne({"_id": key}, {"$inc": {"count": n}}, upsert=True) for key, n in per_key.items()]
    db[COUNTS].bulk_write(writes, ordered=False)


@query()
def ingest_a_total(db):
    """:returns: how many events the handler has handled (0 before the first)."""
    doc = db[COUNTS].find_one({"_id": TOTAL_ID})
    return int(doc["count"]) if doc else 0
