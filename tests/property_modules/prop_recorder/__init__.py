"""Test recorder: keeps every event it receives with its log metadata.

Used by ``tests/test_xapi.py`` (statements must arrive with source ``xapi``);
not a module to deploy.
"""
import json

from sandbox import event_handler, query


def _verb(evt):
    try:
        return evt.learn.verb
    except Exception:  # an event the data layer cannot read
        return None


@event_handler()
def record(db, events):
    """Keep each received event's identity, source, raw event and ``evt.learn.verb``.

    The raw event is kept as JSON text: xAPI extension keys are IRIs, with dots.
    """
    if events:
        db["events"].insert_many([{"id": e.meta["id"], "source": e.meta["source"],
                                   "event": json.dumps(dict(e.event)), "verb": _verb(e)} for e in events])


@query()
def recorded(db, ids: list[str]):
    """The recorded events whose identity is in ``ids``.

    :returns: ``[{"id", "source", "event", "verb"}]``, ``event`` as JSON text.
    """
    return list(db["events"].find({"id": {"$in": ids}}, {"_id": 0}))
