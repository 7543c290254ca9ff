"""Dump to db: every event, stored as it came in the module's own database.

The handler copies each event into the ``event_log`` collection;
``/query/dumped_count`` tells how many are stored and
``/query/dumped_events?limit=N`` shows the latest ones.

Delivery is at least once, so each event is stored under an ``_id`` made of its
place in the log (``seq``), with an upsert: an event delivered again replaces
itself, and the ``_id`` orders the collection as the log does.
"""
from pymongo import ReplaceOne

from sandbox import BadParameter, event_handler, query

COLLECTION = "event_log"
MAX_LIMIT = 1000


@event_handler()
def dump_to_db(db, events):
    """Store each event (its raw dict) in the ``event_log`` collection, once whatever the repeats."""
    if events:
        documents = [{**e.event, "_id": _doc_id(e.meta["seq"])} for e in events]
        db[COLLECTION].bulk_write([ReplaceOne({"_id": doc["_id"]}, doc, upsert=True) for doc in documents],
                                  ordered=False)


def _doc_id(seq: int) -> str:
    # Zero-padded, so string order is log order; a letter first, never a date.
    return f"s{seq:020d}"


@query()
def dumped_count(db):
    """:returns: how many events are stored."""
    # Not count_documents: the embedded store scans the whole collection for it.
    return db[COLLECTION].estimated_document_count()


@query()
def dumped_events(db, limit: int = 10):
    """The latest stored events, oldest first.

    :param limit: how many (1 to 1000, default 10).
    :returns: a list of event dicts (without the store's ``_id``).
    :raises BadParameter: ``limit`` is out of range.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise BadParameter("limit", f"must be between 1 and {MAX_LIMIT}, got {limit}")
    # _ids follow the log, so the newest documents have the largest.
    newest_first = db[COLLECTION].find({}).sort("_id", -1).limit(limit)
    latest = [{k: v for k, v in doc.items() if k != "_id"} for doc in newest_first]
    return latest[::-1]
