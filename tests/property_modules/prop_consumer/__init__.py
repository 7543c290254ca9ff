"""Test consumer of the ``prop_layer`` data layer: a handler filtered on a property.

Used by ``tests/test_property_filters_e2e.py``; not a module to deploy.
"""
from sandbox import event_handler, query


@event_handler(filter={"learn.verb": "http://x/play_video"})
def plays(db, events):
    """Record each received event's identity, source and actor (read through ``evt.learn.actor``)."""
    if events:
        db["plays"].insert_many([{"id": e.meta["id"], "source": e.meta["source"], "actor": e.learn.actor,
                                  "tag": e.get("tag") or (e.get("context") or {}).get("registration")}
                                 for e in events])


@query()
def received_plays(db, tag: str = ""):
    """:returns: ``[{"id", "source", "actor", "tag"}]`` of the received events (of ``tag``), in order."""
    match = {"tag": tag} if tag else {}
    return list(db["plays"].find(match, {"_id": 0}).sort("_id", 1))
