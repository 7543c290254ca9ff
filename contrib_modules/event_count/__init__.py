"""Event count: how many events arrived, in all and per user, and how many users were seen.

It is also the module the old prototype tested itself with, and keeps doing
that job: a query with three names (``three_name``), a query calling those
names through ``query`` (``check_three_name``), views built on queries, and
events that drive the module's cache (``cachetest``) and file store
(``pyfstest``).
"""
from pymongo import UpdateOne

from sandbox import BadParameter, event_handler, query, view
from sandbox.filestore import UnsafePath

COUNTS = "counts"
SEEN = "seen"  # one marker per event counted
GLOBAL_ID = "global"
THREE_NAMES = ["three_name", "edx_three_name", "edx.three_name"]
THREE_NAME_ANSWER = "I have three names"


def _user_id(user: str) -> str:
    # A fixed prefix: the embedded store mis-compares _ids that start with a date.
    return f"user|{user}"


def _event_id(identity: str) -> str:
    # Prefixed: an event's id may start with a date, which the embedded store mis-compares.
    return f"event|{identity}"


def _user_of(event) -> str | None:
    """:returns: the event's user (``username``, else ``user``), or None."""
    user = event.get("username") or event.get("user")
    if user is None or isinstance(user, (dict, list)) or user == "":
        return None
    return str(user)


def _count(db, doc_id: str) -> int:
    doc = db[COUNTS].find_one({"_id": doc_id})
    return int(doc["count"]) if doc else 0


# -- counting ---------------------------------------------------------------

@event_handler()
def count_events(db, events):
    """Count the events, globally and per user, exactly under at-least-once delivery.

    Each event first leaves a marker in ``seen``, one document keyed by its identity
    in the log (an upsert a repeat cannot change); then the counts of the users in
    the batch, and the global one, are ``$set`` to how many markers there are. A
    batch delivered again after a crash, wherever it stopped, writes the same
    markers and recomputes the same numbers.
    """
    if not events:
        return
    markers = [UpdateOne({"_id": _event_id(evt.meta["id"])}, {"$setOnInsert": {"user": _user_of(evt)}},
                         upsert=True) for evt in events]
    db[SEEN].bulk_write(markers, ordered=False)
    db[SEEN].create_index("user", name="user")  # a no-op once it exists
    users = sorted({user for user in map(_user_of, events) if user is not None})
    per_user = {row["_id"]: row["n"] for row in db[SEEN].aggregate([
        {"$match": {"user": {"$in": users}}}, {"$group": {"_id": "$user", "n": {"$sum": 1}}}])}
    # Top-level fields only: $inc on a nested path in an upsert is unreliable on the
    # embedded store. "kind" is set on creation so users can be counted with $match.
    writes = [UpdateOne({"_id": GLOBAL_ID}, {"$set": {"count": db[SEEN].estimated_document_count()},
                                             "$setOnInsert": {"kind": "global"}}, upsert=True)]
    writes += [UpdateOne({"_id": _user_id(user)}, {"$set": {"count": per_user[user]},
                                                   "$setOnInsert": {"kind": "user", "user": user}},
                         upsert=True)
               for user in users]
    db[COUNTS].bulk_write(writes, ordered=False)


@query()
def event_count(db):
    """:returns: how many events the module has seen (0 before the first)."""
    return _count(db, GLOBAL_ID)


@query()
def user_event_count(db, user: str):
    """:param user: a user name. :returns: how many events that user sent (0 if none)."""
    return _count(db, _user_id(user))


@query()
def user_count(db):
    """:returns: how many distinct users sent events."""
    # aggregate($match, $count) rather than count_documents, which is slow on the embedded store.
    result = list(db[COUNTS].aggregate([{"$match": {"kind": "user"}}, {"$count": "users"}]))
    return result[0]["users"] if result else 0


@view()
def user_count_view(query):
    """How many distinct users sent events."""
    return f"<html>Users: {int(query.user_count())}</html>"


@view()
def event_count_view(query):
    """How many events arrived."""
    return f"<html>Events: {int(query.event_count())}</html>"


# -- names and cross-calls ----------------------------------------------------

@query(name=THREE_NAMES)
def three_name():
    """A query answering to three names."""
    return THREE_NAME_ANSWER


@query(name="check_three_name")
def check_three_name(query):
    """Call ``three_name`` through two of its names via the ``query`` proxy.

    :returns: ``"Works"``.
    :raises RuntimeError: a name did not answer as expected.
    """
    answers = {"three_name": query.three_name(), "edx_three_name": query.edx_three_name(),
               "edx.three_name": query("edx.three_name")}
    wrong = {name: answer for name, answer in answers.items() if answer != THREE_NAME_ANSWER}
    if wrong:
        raise RuntimeError(f"three_name answered wrongly under {wrong!r}")
    return "Works"


# -- cache --------------------------------------------------------------------

@query()
def cache_get(cache, key: str):
    """:param key: a cache key. :returns: the value a ``cachetest`` event stored (None if none)."""
    return cache.get(key)


@event_handler(filter={"event": "cachetest"})
def cache_set(cache, log, events):
    """Handle ``{"event": "cachetest", "key": k, "value": v, "timeout": seconds}``: cache ``v`` under ``k``."""
    for evt in events:
        if evt.get("event") != "cachetest":
            continue
        try:
            key, value = evt["key"], evt["value"]
            timeout = float(evt.get("timeout", 300))
            cache.set(key, value, timeout)
        except (KeyError, TypeError, ValueError) as err:
            # A malformed event would fail on every retry: note it and move on.
            log.warning("ignoring malformed cachetest event %r: %s", dict(evt.event), err)


# -- file store ---------------------------------------------------------------

@query()
def readfile(fs, filename: str):
    """:param filename: a file of the module. :returns: its text, or None if it does not exist.

    :raises BadParameter: the name leaves the module's folder.
    """
    try:
        if not fs.exists(filename):
            return None
        with fs.open(filename, "r", encoding="utf-8") as handle:
            return handle.read()
    except UnsafePath as err:
        raise BadParameter("filename", str(err)) from err


@event_handler(filter={"event": "pyfstest"})
def fs_event(fs, log, events):
    """Handle ``{"event": "pyfstest", "create": name, "contents": text}`` and ``{"event": "pyfstest", "delete": name}``."""
    for evt in events:
        if evt.get("event") != "pyfstest":
            continue
        try:
            if "create" in evt:
                with fs.open(evt["create"], "w", encoding="utf-8") as handle:
                    handle.write(str(evt.get("contents", "")))
            if "delete" in evt:
                fs.remove(evt["delete"])
        except (UnsafePath, TypeError) as err:
            log.warning("ignoring pyfstest event %r: %s", dict(evt.event), err)
