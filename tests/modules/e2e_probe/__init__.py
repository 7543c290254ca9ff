"""End-to-end probe: one endpoint per injected name, plus misbehaving endpoints.

Used by ``tests/test_http_e2e.py`` against a real ``hostd serve``; not a module
to deploy.
"""
import os
import time
import uuid

from sandbox import event_handler, query, view


@query()
def uses_db(db):
    """Insert a document, read it back. :returns: its value and how it was found."""
    token = uuid.uuid4().hex
    db["probe"].insert_one({"token": token, "value": 41})
    found = db["probe"].find_one({"token": token})
    return {"value": found["value"], "token_matches": found["token"] == token}


@query()
def uses_mongodb(mongodb):
    """:returns: the name of the database injected as ``mongodb``."""
    return mongodb.name


@query()
def uses_fs(fs):
    """Write a file. :returns: whether it exists, the folder listing and a signed URL."""
    with fs.open("probe.txt", "w", encoding="utf-8") as handle:
        handle.write("probe contents")
    return {"exists": fs.exists("probe.txt"), "listdir": fs.listdir(), "url": fs.get_url("probe.txt")}


@query()
def uses_cache(cache):
    """Set then get a cache entry. :returns: the value read back."""
    cache.set("probe-key", {"cached": [1, 2, 3]}, 60)
    return cache.get("probe-key")


@query()
def uses_params(params, a: int = 1):
    """:returns: ``a`` and the request parameters the function did not name."""
    return {"a": a, "params": params}


@query()
def uses_log(log):
    """Log a line. :returns: ``"ok"``."""
    log.info("e2e probe says hello")
    return "ok"


@query()
def uses_query(query):
    """Call another module's query. :returns: how many rows ``get_grades`` gave."""
    return len(query.get_grades(course="x"))


@query()
def uses_view(view):
    """Call another module's view. :returns: its HTML."""
    return view.hello_world()


@query()
def uses_emit(emit, n: int):
    """Emit ``{"kind": "emitted", "n": n}``. :returns: the identities ``emit`` gave."""
    return emit({"kind": "emitted", "n": n})


@event_handler()
def collect(db, events):
    """Keep every received event's raw dict in ``seen``."""
    if events:
        db["seen"].insert_many([dict(e.event) for e in events])


@query()
def seen_count(db, kind: str):
    """:returns: how many received events have that ``kind``."""
    result = list(db["seen"].aggregate([{"$match": {"kind": kind}}, {"$count": "n"}]))
    return result[0]["n"] if result else 0


@query()
def typed(i: int, f: float, b: bool, tags: list[str], s: str = "d"):
    """:returns: the converted request parameters."""
    return {"i": i, "f": f, "b": b, "tags": tags, "s": s}


@query()
def db_name(db):
    """:returns: the injected database's name."""
    return db.name


@query()
def slow(seconds: float):
    """Sleep. :returns: the seconds slept."""
    time.sleep(seconds)
    return seconds


@query()
def boom():
    """Always raises."""
    raise ValueError("secret-detail-xyz")


@query()
def die():
    """Kill this module's own sandbox process."""
    os._exit(1)


@view()
def probe_view(n: int = 1):
    """A tiny view of the probe."""
    return f"<html>probe {n}</html>"
