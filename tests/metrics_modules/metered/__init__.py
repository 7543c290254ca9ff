"""For ``tests/test_metrics.py``: a query to count calls of, a handler that gives up on poison."""
from sandbox import event_handler, query


@query()
def ping(n: int = 0):
    """:returns: ``n``."""
    return n


@event_handler(filter={"kind": "metered"})
def tally(db, events):
    """Count the events; one with ``poison`` set raises, until it becomes a dead letter."""
    if any(e.event.get("poison") for e in events):
        raise ValueError("poison event")
    db["tally"].insert_many([{"n": e.event.get("n")} for e in events])


@query()
def boom():
    """Raise: the module's last error becomes this traceback."""
    raise RuntimeError("boom")
