"""Well-behaved neighbour of the hostile modules (``tests/test_hostile_modules.py``).

A constant query (the load the tests keep on every daemon), a handler counting
every event it receives by its ``tag``, and a query leaving secrets in its file
store and database that hostile neighbours then try to read. Not a module to deploy.
"""
from sandbox import event_handler, query

_seen: dict = {}  # tag -> identities of the events received (this sandbox must never restart)


@query()
def good_a_const():
    """:returns: a constant."""
    return {"answer": 42, "module": "good_a"}


@event_handler()
def count_events(events):
    """Remember every event's identity under its ``tag``."""
    for evt in events:
        _seen.setdefault(str(evt.get("tag", "")), set()).add(evt.meta["id"])


@query()
def good_a_seen(tag: str):
    """:returns: how many distinct events of ``tag`` the handler received."""
    return len(_seen.get(tag, ()))


@query()
def good_a_write_secret(fs, db, secret: str):
    """Write ``secret`` to ``secret.txt`` in the file store and to the ``secrets`` collection."""
    with fs.open("secret.txt", "w", encoding="utf-8") as handle:
        handle.write(secret)
    db["secrets"].replace_one({"_id": "secret"}, {"_id": "secret", "value": secret}, upsert=True)
    return True
