"""Probe of ``tests/test_hostile_http.py``: counts what reaches the log, converts, crashes.

Not a module to deploy.
"""
import ctypes
import os

from sandbox import event_handler, query


@event_handler()
def collect(db, events):
    """Keep the identity and marker of every event received."""
    if events:
        db["seen"].insert_many([{"marker": e.event.get("marker")} for e in events])


@query()
def seen_total(db):
    """:returns: how many events the handler received, all told."""
    return db["seen"].estimated_document_count()


@query()
def seen(db, marker: str):
    """:returns: how many received events carry ``marker``."""
    result = list(db["seen"].aggregate([{"$match": {"marker": marker}}, {"$count": "n"}]))
    return result[0]["n"] if result else 0


@query()
def typed(limit: int = 10, ratio: float = 1.0, flag: bool = False, tags: list[int] | None = None):
    """:returns: the converted parameters."""
    return {"limit": limit, "ratio": ratio, "flag": flag, "tags": tags}


@query()
def sandbox_pid():
    """:returns: this sandbox's pid (a restart changes it)."""
    return os.getpid()


@query()
def trivial():
    """:returns: 1."""
    return 1


@query()
def segv():
    """Read address 0: the process dies of SIGSEGV."""
    return len(ctypes.string_at(0))
