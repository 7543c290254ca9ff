"""Dead letters: events a handler kept failing on, parked with the error.

An admin lists them (``GET /modules/{name}/dead_letters``, ``hostd dlq list``)
and sends them back through their handler (``POST .../dead_letters/retry``,
``hostd dlq retry``): they are marked for retry and the delivery thread
re-delivers them one by one, removing those the handler now accepts.
"""
from __future__ import annotations

import threading
import time

__all__ = ["DeadLetters"]


class DeadLetters:
    """The ``dead_letters`` collection of hostd's database.

    :param db: hostd's own database.
    """

    def __init__(self, db):
        self._coll = db["dead_letters"]
        self._retry_requested: set = set()
        self._counts: dict = {}   # module -> {handler: letters}, read from the store after each change here
        self._lock = threading.Lock()

    @staticmethod
    def _key(module: str, handler: str, seq: int) -> str:
        return f"d|{module}|{handler}|{seq}"

    def add(self, module: str, handler: str, doc: dict, error: str, attempts: int) -> None:
        """Park log document ``doc`` that ``handler`` of ``module`` keeps failing on."""
        self._coll.update_one({"_id": self._key(module, handler, doc["seq"])}, {"$set": {
            "module": module, "handler": handler, "seq": doc["seq"], "eid": doc["eid"],
            "source": doc.get("source"), "received": doc.get("received"), "event": doc["event"],
            "error": error, "attempts": attempts, "status": "dead", "at": time.time()}}, upsert=True)
        self._recount(module)

    def list(self, module: str, limit: int = 1000) -> list[dict]:
        """:returns: the module's dead letters, oldest first."""
        docs = self._coll.find({"module": module}, {"_id": 0}).sort("seq", 1).limit(limit)
        return [{"handler": d["handler"], "seq": d["seq"], "id": d["eid"][2:], "event": d["event"],
                 "error": d["error"], "attempts": d["attempts"], "status": d["status"], "at": d["at"]}
                for d in docs]

    def count(self, module: str) -> int:
        """:returns: how many dead letters the module has (from memory: no store round trip)."""
        return sum(self._counts.get(module, {}).values())

    def by_handler(self, module: str) -> dict:
        """:returns: ``{handler: dead letters}`` of the module (from memory)."""
        return dict(self._counts.get(module, {}))

    def _recount(self, module: str) -> None:
        result = self._coll.aggregate([{"$match": {"module": module}},
                                       {"$group": {"_id": "$handler", "n": {"$sum": 1}}}])
        self._counts[module] = {doc["_id"]: doc["n"] for doc in result}

    def resume(self) -> None:
        """After a restart: count the letters; modules with letters marked for retry get them retried."""
        for module in self._coll.distinct("module"):
            self._recount(module)
        for module in self._coll.distinct("module", {"status": "retry"}):
            with self._lock:
                self._retry_requested.add(module)

    def request_retry(self, module: str) -> int:
        """Mark every dead letter of ``module`` for re-delivery. :returns: how many."""
        marked = self._coll.update_many({"module": module}, {"$set": {"status": "retry"}}).matched_count
        with self._lock:
            self._retry_requested.add(module)
        return marked

    def due_for_retry(self, module: str, handler: str, limit: int = 100) -> list[dict]:
        """:returns: log-document-like dead letters of that handler marked for retry."""
        with self._lock:
            if module not in self._retry_requested:
                return []
        docs = list(self._coll.find({"module": module, "handler": handler, "status": "retry"})
                    .sort("seq", 1).limit(limit))
        if not docs and not list(self._coll.find({"module": module, "status": "retry"}).limit(1)):
            with self._lock:
                self._retry_requested.discard(module)
        return docs

    def retry_failed(self, letter: dict, error: str) -> None:
        """The handler failed again: back to dead, with the new error."""
        self._coll.update_one({"_id": letter["_id"]}, {"$set": {"status": "dead", "error": error},
                                                       "$inc": {"attempts": 1}})

    def remove(self, letter: dict) -> None:
        """The handler accepted the event this time."""
        self._coll.delete_one({"_id": letter["_id"]})
        self._recount(letter["module"])

    def expire(self, before: float) -> int:
        """Delete the letters parked before ``before`` (epoch seconds), except those marked for retry.

        Idempotent, so several nodes may run it at once; the counts of every module are read again
        (other nodes may have deleted too).

        :returns: how many this call deleted.
        """
        deleted = self._coll.delete_many({"at": {"$lt": before}, "status": "dead"}).deleted_count
        for module in set(self._coll.distinct("module")) | set(self._counts):
            self._recount(module)
        return deleted
