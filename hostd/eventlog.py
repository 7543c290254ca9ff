"""The append-only event log in the store, and handler cursors.

Rules followed (see the embedded-store notes in the docs): one appender (the
host's ingest thread) reserves a range of ``seq`` numbers from a counter and
inserts in order with ``insert_many(ordered=True)``; order lives in a dedicated
integer ``seq`` field with a unique index; identities (``eid``) are unique too,
so re-sending a batch after an unknown outcome is idempotent; readers poll an
indexed range with a limit, never a long-lived cursor.

A log document::

    {"seq": 17, "eid": "i|<identity>", "source": "http", "received": 1764.3, "event": {...}}
"""
from __future__ import annotations

import hashlib
import json
import time

import pymongo
from pymongo.errors import AutoReconnect, BulkWriteError
from pymongo.read_concern import ReadConcern

__all__ = ["event_identity", "EventLog", "Cursors"]

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
    """

    def __init__(self, db):
        self._db = db
        # On a replica set an acknowledged event must survive a failover: majority + journal,
        # and readers only see what is majority-committed (the embedded store ignores both).
        self.events = db.get_collection("event_log",
                                        write_concern=pymongo.WriteConcern(w="majority", j=True),
                                        read_concern=ReadConcern("majority"))
        self._counters = db.get_collection("counters", write_concern=pymongo.WriteConcern(w="majority", j=True))

    def ensure_indexes(self) -> None:
        """Create the unique indexes the log relies on (explicit names)."""
        self.events.create_index([("seq", 1)], unique=True, name="seq_unique")
        self.events.create_index([("eid", 1)], unique=True, name="eid_unique")

    def _reserve(self, count: int) -> int:
        """:returns: the first of ``count`` fresh sequence numbers."""
        doc = self._counters.find_one_and_update(
            {"_id": "event_seq"}, {"$inc": {"value": count}}, upsert=True,
            return_document=pymongo.ReturnDocument.AFTER)
        return doc["value"] - count + 1

    def append(self, events: list[dict], source: str) -> dict:
        """Durably log the events that are new; the caller is the only appender.

        :param events: event dicts (already validated).
        :param source: ``http``, ``xapi`` or ``module:<name>``.
        :returns: ``{"accepted", "duplicates", "ids", "new_ids", "last_seq"}``; ``ids`` in
            request order, ``new_ids`` those first logged now.
        """
        ids = [event_identity(e) for e in events]
        eids = [_EID_PREFIX + i for i in ids]
        known = set()
        unique = list(dict.fromkeys(eids))
        for start in range(0, len(unique), 1000):
            chunk = unique[start:start + 1000]
            known.update(d["eid"] for d in self.events.find({"eid": {"$in": chunk}}, {"eid": 1, "_id": 0}))
        fresh, seen = [], set(known)
        for eid, event in zip(eids, events):
            if eid not in seen:
                seen.add(eid)
                fresh.append((eid, event))
        last_seq = None
        if fresh:
            first = self._reserve(len(fresh))
            now = time.time()
            docs = [{"seq": first + n, "eid": eid, "source": source, "received": now, "event": event}
                    for n, (eid, event) in enumerate(fresh)]
            self._insert(docs)
            last_seq = first + len(fresh) - 1
        return {"accepted": len(fresh), "duplicates": len(events) - len(fresh), "ids": ids,
                "new_ids": [eid[len(_EID_PREFIX):] for eid, _ in fresh], "last_seq": last_seq}

    def _insert(self, docs: list[dict], attempts: int = 5) -> None:
        """Insert in order; on an unknown outcome re-send, counting duplicates as written."""
        for attempt in range(attempts):
            try:
                self.events.insert_many(docs, ordered=True)
                return
            except AutoReconnect:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))
            except BulkWriteError as err:
                errors = err.details.get("writeErrors", [])
                if not errors or any(e.get("code") != 11000 for e in errors):
                    raise
                index = errors[0]["index"]
                docs = docs[index + 1:]  # the duplicate was ours, written before the error
                if not docs:
                    return

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
        self._coll.update_one({"_id": self.key(module, handler)}, {"$max": {"seq": seq}}, upsert=True)
