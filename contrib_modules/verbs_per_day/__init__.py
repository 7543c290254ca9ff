"""Verbs per day: how many xAPI statements each actor made with each verb, each day.

It reads nothing but the ``tincan`` data layer (``evt.tincan.statements``), so
it answers the same for an Open edX event stream and for the xAPI statements
Open edX would have sent for it: a multi-part problem check counts as its
statements do (one for the problem, one per part). Needs the ``tincan``
module's ``properties.py`` to be loaded (it is whenever ``tincan`` is installed).

- ``/query/verbs_per_day?actor=&verb=``: ``[{"actor", "verb", "day", "count"}]``.
- ``/view/verbs_per_day_view?actor=``: the same as an HTML table.

The actor is the account name of the statement's actor (else its mbox,
mbox_sha1sum or openid); the day is the UTC date of its timestamp.

Delivery is at least once, so counting is idempotent: an event marks the
document of each (actor, verb, day) its statements have with a field named
after its place in the log (``$set`` of ``s<seq>`` to its number of such
statements, the same however often it comes); the document's ``count`` is then
``$set`` to the sum of its marks. One actor's statements of one day bound a
document's size.
"""
import html
import json
from collections import defaultdict
from datetime import datetime, timezone

from pymongo import UpdateOne

from sandbox import event_handler, query, view

COUNTS = "verbs_per_day"
_IFIS = ("mbox", "mbox_sha1sum", "openid")


def actor_key(actor) -> str | None:
    """:returns: what identifies an xAPI actor here: its account name, else its other IFI."""
    if not isinstance(actor, dict):
        return None
    account = actor.get("account")
    if isinstance(account, dict) and account.get("name"):
        return str(account["name"])
    return next((str(actor[k]) for k in _IFIS if actor.get(k)), None)


def day_of(timestamp) -> str | None:
    """:returns: the UTC date (``YYYY-MM-DD``) of an ISO 8601 timestamp (no zone: UTC), or None."""
    try:
        moment = datetime.fromisoformat(str(timestamp))
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.date().isoformat()


def _doc_id(actor: str, verb: str, day: str) -> str:
    # Unambiguous whatever the names contain, and never starting with a date
    # (the embedded store mis-compares _ids that do).
    return json.dumps([actor, verb, day], separators=(",", ":"))


def _marks(doc) -> int:
    """:returns: the statements counted in a document: the sum of its ``s<seq>`` fields."""
    return sum(value for key, value in doc.items() if key[0] == "s" and key[1:].isdigit())


@event_handler()
def count_verbs(db, events):
    """Mark each event's (actor, verb, day) documents, then recount them: two bulk writes per batch."""
    marks = defaultdict(dict)
    for evt in events:
        mark = f"s{evt.meta['seq']}"
        for statement in evt.tincan.statements or ():
            key = (actor_key(statement.get("actor")), (statement.get("verb") or {}).get("id"),
                   day_of(statement.get("timestamp")))
            if all(key):
                marks[key][mark] = marks[key].get(mark, 0) + 1
    if not marks:
        return
    ids = [_doc_id(*key) for key in marks]
    db[COUNTS].bulk_write([
        UpdateOne({"_id": doc_id}, {"$set": fields, "$setOnInsert": {"actor": key[0], "verb": key[1], "day": key[2]}},
                  upsert=True)
        for doc_id, (key, fields) in zip(ids, marks.items())], ordered=False)
    db[COUNTS].bulk_write([UpdateOne({"_id": doc["_id"]}, {"$set": {"count": _marks(doc)}})
                           for doc in db[COUNTS].find({"_id": {"$in": ids}})], ordered=False)


@query()
def verbs_per_day(db, actor: str = "", verb: str = ""):
    """Statement counts per actor, verb and day.

    :param actor: only this actor (an account name); all when empty.
    :param verb: only this verb id; all when empty.
    :returns: ``[{"actor", "verb", "day", "count"}]`` ordered by day, actor, verb.
    """
    match = {key: value for key, value in (("actor", actor), ("verb", verb)) if value}
    rows = [{key: doc[key] for key in ("actor", "verb", "day", "count")} for doc in db[COUNTS].find(match)]
    return sorted(rows, key=lambda row: (row["day"], row["actor"], row["verb"]))


@view()
def verbs_per_day_view(query, actor: str = ""):
    """A table of statements per day and verb (for one actor, or all)."""
    rows = query.verbs_per_day(actor=actor)
    body = "".join(
        f"<tr><td>{html.escape(r['day'])}</td><td>{html.escape(r['actor'])}</td>"
        f"<td title=\"{html.escape(r['verb'])}\">{html.escape(r['verb'].rstrip('/').rsplit('/', 1)[-1])}</td>"
        f"<td>{int(r['count'])}</td></tr>" for r in rows)
    title = f"Verbs per day of {html.escape(actor)}" if actor else "Verbs per day"
    return (f"<html><body><h1>{title}</h1><table><tr><th>day</th><th>actor</th><th>verb</th><th>statements</th></tr>"
            f"{body}</table></body></html>")
