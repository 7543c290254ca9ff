"""The append-only event log in the store, and handler cursors.

Rules followed (see the embedded-store notes in the docs): each node's appender
(its ingest thread) reserves a range of ``seq`` numbers from a counter shared by
every node and inserts in order with ``insert_many(ordered=True)``; seqs it
reserved but leaves unused (duplicates) are declared void, so that gap-aware
readers (:mod:`hostd.gaps`) need not wait for them; order lives in a dedicated
integer ``seq`` field with a unique index; identities (``eid``) are unique too,
so re-sending a batch after an unknown outcome is idempotent; readers poll an
indexed range with a limit, never a long-lived cursor.

A log document::

    {"seq": 17, "eid": "i|<identity>", "source": "http", "received": 1764.3, "event": {...}}
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time

import pymongo
import pymongo.errors
from pymongo.errors import AutoReconnect, BulkWriteError
from pymongo.read_concern import ReadConcern

__all__ = ["event_identity", "EventLog", "Cursors"]

log = logging.getLogger("insights.eventlog")


def _duplicate_field(error: dict) -> str | None:
    """Which unique index a code-11000 error is about: ``"seq"``, ``"eid"`` or None."""
    pattern = error.get("keyPattern") or {}
    for field in ("seq", "eid"):
        if field in pattern or re.search(rf"\b(idx_\w*_{field}|{field}_unique)\b", error.get("errmsg", "")):
            return field
    return None

_RETAINED_VOID = "v|retained"  # the one void covering what retention deleted
_EID_PREFIX = "i|"  # identities never start with a date (the embedded store mis-compares those)


def event_identity(event: dict) -> str:
    """:returns: the event's ``id`` / ``event_id`` field, else the SHA-256 of its canonical JSON."""
    for field in ("id", "event_id"):
        value = event.get(field)
        if value is not None and value != "":
            return str(value)
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class EventLog:
    """The log collection of hostd's database.

    :param db: hostd's own ``pymongo`` database.
    :param state_db: where the ``seq`` counter lives (not journaled: see :meth:`ensure_indexes`).
    :param journal: wait for the store's disk sync before an append returns.
    """

    def __init__(self, db, state_db=None, journal: bool = True):
        self._db = db
        # On a replica set an acknowledged event must survive a failover: majority (+ journal),
        # and readers only see what is majority-committed (the embedded store ignores both).
        self.events = db.get_collection("event_log",
                                        write_concern=pymongo.WriteConcern(w="majority", j=journal),
                                        read_concern=ReadConcern("majority"))
        self._counters = (state_db if state_db is not None else db)["counters"]
        self._voids = (state_db if state_db is not None else db)["log_voids"]

    def ensure_indexes(self) -> None:
        """Create the unique indexes the log relies on (explicit names), and reconcile the counter.

        The counter is not journaled (one fewer disk sync per append): if a crash
        lost some of its increments, raising it to the log's head here means a
        ``seq`` already in the log is never handed out again.
        """
        self.events.create_index([("seq", 1)], unique=True, name="seq_unique")
        self.events.create_index([("eid", 1)], unique=True, name="eid_unique")
        self._voids.create_index([("first", 1)], name="voids_first")
        self._counters.update_one({"_id": "event_seq"}, {"$max": {"value": self.head()}}, upsert=True)

    def _reserve(self, count: int) -> int:
        """:returns: the first of ``count`` fresh sequence numbers."""
        doc = self._counters.find_one_and_update(
            {"_id": "event_seq"}, {"$inc": {"value": count}}, upsert=True,
            return_document=pymongo.ReturnDocument.AFTER)
        return doc["value"] - count + 1

    def append(self, events: list[dict], source: str) -> dict:
        """Durably log the events that are new (other nodes may append at the same time).

        Duplicates are found by the unique index while inserting (no query first
        in the common case); their reserved ``seq`` stays unused and is declared
        void (:meth:`voids_between`), so readers step over it without waiting.

        :param events: event dicts (already validated).
        :param source: ``http``, ``xapi`` or ``module:<name>``.
        :returns: ``{"accepted", "duplicates", "ids", "new_ids", "new_seqs", "last_seq"}``;
            ``ids`` in request order, ``new_ids`` those first logged now, ``new_seqs`` their ``seq``.
        """
        ids = [event_identity(e) for e in events]
        fresh, seen = [], set()
        for identity, event in zip(ids, events):
            if identity not in seen:  # the same event twice in one request is logged once
                seen.add(identity)
                fresh.append((_EID_PREFIX + identity, event))
        written = []
        if fresh:
            first = self._reserve(len(fresh))
            now = time.time()
            docs = [{"seq": first + n, "eid": eid, "source": source, "received": now, "event": event}
                    for n, (eid, event) in enumerate(fresh)]
            written = self._insert(docs)
            self._declare_void(set(range(first, first + len(docs))) - {d["seq"] for d in written})
        new_ids = [d["eid"][len(_EID_PREFIX):] for d in written]
        return {"accepted": len(written), "duplicates": len(events) - len(written), "ids": ids,
                "new_ids": new_ids, "new_seqs": [d["seq"] for d in written],
                "last_seq": written[-1]["seq"] if written else None}

    def _declare_void(self, seqs: set) -> None:
        """Record reserved seqs that will never be written, as ranges of consecutive ones."""
        ranges = []
        for seq in sorted(seqs):
            if ranges and ranges[-1][1] == seq - 1:
                ranges[-1][1] = seq
            else:
                ranges.append([seq, seq])
        if not ranges:
            return
        try:  # the events are logged already: a void not recorded costs readers a grace period, no event
            self._voids.insert_many([{"_id": f"v|{low}", "first": low, "last": high} for low, high in ranges],
                                    ordered=False)
        except pymongo.errors.PyMongoError:
            log.warning("event log: could not declare seqs %s void", ranges, exc_info=True)

    def forget_below(self, seq: int) -> None:
        """Everything below ``seq`` is gone for good (retention deleted it): readers step over
        it at once instead of waiting for it as a gap, and the voids declared there go too."""
        self._voids.update_one({"_id": _RETAINED_VOID}, {"$set": {"first": 0}, "$max": {"last": seq - 1}},
                               upsert=True)
        self._voids.delete_many({"last": {"$lt": seq}, "_id": {"$ne": _RETAINED_VOID}})

    def voids_between(self, first: int, last: int) -> list[tuple[int, int]]:
        """:returns: the void ranges ``(first, last)`` that overlap ``first..last``."""
        docs = self._voids.find({"first": {"$lte": last}, "last": {"$gte": first}}).limit(1000)
        return [(d["first"], d["last"]) for d in docs]

    def _known(self, docs: list[dict]) -> dict:
        """:returns: ``{eid: seq}`` of those documents' identities already in the log."""
        eids = [d["eid"] for d in docs]
        return {d["eid"]: d["seq"] for d in self.events.find({"eid": {"$in": eids}}, {"eid": 1, "seq": 1, "_id": 0})}

    def _insert(self, docs: list[dict], attempts: int = 5) -> list[dict]:
        """Insert in order, skipping identities already logged.

        On an unknown outcome (``AutoReconnect``) the same documents are sent
        again; a document found already written with its own ``seq`` was ours.

        :returns: the documents that are in the log because of this call.
        """
        written, pending, checked, failures = [], list(docs), False, 0
        while pending:
            try:
                self.events.insert_many(pending, ordered=True)
                return written + pending
            except AutoReconnect:
                failures += 1
                if failures >= attempts:
                    raise
                time.sleep(0.2 * failures)
            except BulkWriteError as err:
                errors = err.details.get("writeErrors", [])
                if not errors or errors[0].get("code") != 11000:
                    raise
                index = errors[0]["index"]
                written += pending[:index]
                clash, rest = pending[index], pending[index + 1:]
                known = self._known([clash] + (rest if not checked else []))
                checked = True  # one look-up for the rest of the batch, then by the index alone
                if known.get(clash["eid"]) == clash["seq"] or _duplicate_field(errors[0]) == "seq":
                    written.append(clash)  # written by our own earlier, unacknowledged attempt
                ours = [d for d in rest if known.get(d["eid"]) == d["seq"]]
                written += ours
                pending = [d for d in rest if d["eid"] not in known]
        return written

    def events_by_id(self, ids: list[str]) -> dict:
        """:returns: ``{identity: event}`` of those identities that are in the log."""
        eids = [_EID_PREFIX + str(i) for i in ids]
        docs = self.events.find({"eid": {"$in": eids}}, {"eid": 1, "event": 1, "_id": 0}).limit(len(eids))
        return {d["eid"][len(_EID_PREFIX):]: d["event"] for d in docs}

    def head(self) -> int:
        """:returns: the highest ``seq`` in the log (0 when empty)."""
        doc = self.events.find_one({}, {"seq": 1}, sort=[("seq", -1)])
        return doc["seq"] if doc else 0

    def read_after(self, seq: int, limit: int) -> list[dict]:
        """:returns: up to ``limit`` log documents with ``seq`` greater than ``seq``, in order."""
        return list(self.events.find({"seq": {"$gt": seq}}, {"_id": 0}).sort("seq", 1).limit(limit))


class Cursors:
    """Per-handler positions in the log, kept in hostd's database.

    :param db: hostd's own database.
    """

    def __init__(self, db):
        self._coll = db["cursors"]

    @staticmethod
    def key(module: str, handler: str) -> str:
        """:returns: the cursor document's id."""
        return f"c|{module}|{handler}"

    def get(self, module: str, handler: str) -> int | None:
        """:returns: the last acknowledged ``seq`` (``None`` for a handler never seen)."""
        doc = self._coll.find_one({"_id": self.key(module, handler)})
        return None if doc is None else doc["seq"]

    def set(self, module: str, handler: str, seq: int) -> None:
        """Acknowledge everything up to ``seq`` (never moves backwards)."""
        self.set_many([(module, handler, seq)])

    def place_at_head(self, module: str, handlers, head) -> None:
        """Start ``handlers`` of ``module`` that have no cursor yet at the log's head as of now
        (``backfill=False``); ``head`` is called only if one needs it."""
        for handler in handlers:
            if self.get(module, handler) is None:
                self.set(module, handler, head())

    def set_many(self, positions) -> None:
        """Acknowledge ``[(module, handler, seq)]`` in one round trip (never moves backwards)."""
        self._coll.bulk_write([pymongo.UpdateOne({"_id": self.key(m, h)}, {"$max": {"seq": seq}}, upsert=True)
                               for m, h, seq in positions], ordered=False)

    def lowest(self) -> tuple[int, str, str] | None:
        """:returns: ``(seq, module, handler)`` of the cursor furthest behind, read now (None: no cursor)."""
        doc = self._coll.find_one({}, {"seq": 1}, sort=[("seq", 1)])
        if doc is None:
            return None
        _, module, handler = doc["_id"].split("|", 2)
        return doc["seq"], module, handler
