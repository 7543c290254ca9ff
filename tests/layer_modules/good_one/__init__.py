"""A well-behaved module: counts events, answers a query."""
from sandbox import event_handler, query


@event_handler()
def count(db, events):
    """Count the events received."""
    db["counts"].update_one({"_id": "n"}, {"$inc": {"n": len(events)}}, upsert=True)


@query()
def good_count(db):
    """How many events were received."""
    doc = db["counts"].find_one({"_id": "n"})
    return doc["n"] if doc else 0
