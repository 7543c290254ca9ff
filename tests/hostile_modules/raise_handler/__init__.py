"""Hostile: an event handler that raises on every event it gets. Not a module to deploy."""
from sandbox import event_handler, query


@query()
def raise_handler_status():
    return "hostile"


@event_handler(filter={"kind": "raise_me"})
def always_raises(events):
    raise ValueError(f"raise_handler refuses {len(events)} event(s) (poisoned-by-design)")
