"""bench/ingest.py, part (c): one realtime handler doing a tiny write, for POST /event latency."""
from sandbox import event_handler, query

COUNTS = "probe"
TOTAL_ID = "total|all"


@event_handler(mode="realtime")
def probe(db, events):
    """Count the events with one ``$inc``: the smallest write a realtime handler does."""
    db[COUNTS].update_one({"_id": TOTAL_ID}, {"$inc": {"count": len(events)}}, upsert=True)


@query()
def rt_probe_total(db):
    """:returns: how many events the realtime handler has seen (0 before the first)."""
    doc = db[COUNTS].find_one({"_id": TOTAL_ID})
    return int(doc["count"]) if doc else 0
