"""Pipeline test module: emits a ``chain-derived`` event for each ``chain-start`` event.

Used by ``tests/test_event_pipeline.py``; not a module to deploy. A second,
unfiltered handler counts the kinds it receives: a module must not receive the
events it emitted itself unless its filter names ``source``.
"""
from pymongo import UpdateOne

from sandbox import event_handler, query


@event_handler(filter={"kind": "chain-start"})
def start_chain(emit, events):
    """Emit one derived event per start event."""
    if events:
        emit([{"kind": "chain-derived", "from": e.meta["id"]} for e in events])


@event_handler()
def watch_all(db, events):
    """Count received events by kind."""
    counts = {}
    for e in events:
        kind = str(e.get("kind"))
        counts[kind] = counts.get(kind, 0) + 1
    if counts:
        db["kinds"].bulk_write([UpdateOne({"_id": "k|" + kind}, {"$inc": {"n": n}}, upsert=True)
                                for kind, n in counts.items()], ordered=False)


@query()
def emit_a_kinds(db):
    """:returns: ``{kind: events received}`` of the unfiltered handler."""
    return {d["_id"][2:]: d["n"] for d in db["kinds"].find({}).limit(10_000)}
