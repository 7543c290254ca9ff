"""A module's cache (``cache``), kept in the module's own database.

Every process of a module (a restarted sandbox, several sandboxes, several
nodes) reads and writes the same entries: they are documents of the
collection :data:`COLLECTION` in the module's database. A value is stored as
its msgpack bytes (numpy arrays and scalars converted as for a reply) with the
wall-clock time it expires at (seconds since the epoch, a plain number); an
expired entry reads as missing and is deleted then, and each process now and
then deletes the expired entries nobody reads again.

No TTL index: the embedded store turns a date into a string when it updates a
document that exists already, and a TTL index ignores strings. (It also
ignores ``$setOnInsert`` in ``find_one_and_update``, so nothing here uses it.)

:class:`CacheStore` keeps entries by document id and also holds *leases*, which
:mod:`sandbox.memoize` uses so that one process at a time computes a result.
:class:`Cache` is what a module gets as ``cache``: any ``str`` key.
"""
from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass

import msgpack

# The very conversion replies get, so that a cached result reads back as a caller would see it.
from .protocol import _default as _to_packable

__all__ = ["COLLECTION", "SWEEP_EVERY_S", "Entry", "CacheStore", "Cache", "cache_id", "pack", "unpack"]

#: The collection of cache entries in each module's database.
COLLECTION = "_insights_cache"
#: seconds between two sweeps of expired entries by one process
SWEEP_EVERY_S = 600.0
_CACHE_PREFIX, _HASHED_PREFIX = "c|", "h|"
# Keys kept readable in the ``_id``: printable ASCII of a reasonable length. Every ``_id`` starts
# with a prefix, so none can start with an ISO date (which the embedded store mishandles).
_PLAIN_KEY = re.compile(r"^[\x20-\x7e]{0,200}$")


def pack(value) -> bytes:
    """:returns: ``value`` as msgpack bytes (numpy values, tuples, sets and dates converted).

    :raises TypeError: a value msgpack cannot carry.
    """
    return msgpack.packb(value, use_bin_type=True, default=_to_packable)


def unpack(data: bytes):
    """:returns: the value :func:`pack` packed (lists for arrays, ``str`` keys or not)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


@dataclass(frozen=True)
class Entry:
    """One entry as read.

    :param data: the packed value, ``None`` when there is none or it expired.
    :param leased: whether a process holds a live lease on it (is computing it).
    :param owner: who holds that lease (``""`` when none does).
    """

    data: bytes | None
    leased: bool
    owner: str = ""

    @classmethod
    def of(cls, doc: dict, now: float) -> "Entry":
        """:returns: the entry stored as ``doc``, seen at time ``now``."""
        leased = doc.get("lease_until", 0.0) > now
        expires = doc.get("expires")
        fresh = "value" in doc and (expires is None or expires > now)
        return cls(bytes(doc["value"]) if fresh else None, leased, doc.get("owner", "") if leased else "")


class CacheStore:
    """Cache entries of one module's database, by document id.

    A document is ``{_id, value: <msgpack bytes>, expires: <epoch s or None>,
    lease_until: <epoch s>, owner}``; ``lease_until`` is always set (``0.0``: no
    lease) so that a lease can be taken with one conditional upsert. The sweep
    also clears a lapsed lease without a value (its owner died computing it).

    :param collection: the ``pymongo`` collection (:data:`COLLECTION` of the module's database).
    :param clock: wall-clock time in seconds (shared by every process, so ``time.time``).
    """

    def __init__(self, collection, clock=time.time):
        self._collection = collection
        self._clock = clock
        self._swept = None  # when this process last swept

    def sweep(self) -> int:
        """Delete the expired entries and the lapsed leases without a value (never a live lease).

        :returns: how many were deleted.
        """
        now = self._clock()
        self._swept = now
        lapsed = {"lease_until": {"$lt": now}}
        return sum(self._collection.delete_many({**condition, **lapsed}).deleted_count
                   for condition in ({"expires": {"$lt": now}}, {"value": {"$exists": False}}))

    def _sweep_now_and_then(self) -> None:
        if self._swept is None or self._clock() - self._swept >= SWEEP_EVERY_S:
            self.sweep()

    def read(self, doc_id: str) -> Entry:
        """:returns: the entry under ``doc_id``; an expired value is deleted and reads as ``None``."""
        doc = self._collection.find_one({"_id": doc_id})
        if doc is None:
            return Entry(None, False)
        now = self._clock()
        entry = Entry.of(doc, now)
        if "value" in doc and entry.data is None and not entry.leased:
            # only this expired value, never a newer one or someone's lease
            self._collection.delete_one({"_id": doc_id, "expires": doc["expires"], "lease_until": {"$lt": now}})
        return entry

    def write(self, doc_id: str, data: bytes, timeout: float | None) -> None:
        """Store ``data`` under ``doc_id`` for ``timeout`` seconds (``None``: no expiry); ends any lease."""
        from bson.binary import Binary  # pymongo's: here, so that importing sandbox stays quick
        self._sweep_now_and_then()
        expires = None if timeout is None else self._clock() + timeout
        self._collection.update_one(
            {"_id": doc_id},
            {"$set": {"value": Binary(data), "expires": expires, "lease_until": 0.0, "owner": ""}},
            upsert=True)

    def remove(self, doc_id: str) -> None:
        """Delete the entry (value and lease) under ``doc_id``; missing is fine."""
        self._collection.delete_one({"_id": doc_id})

    def acquire(self, doc_id: str, owner: str, lease_s: float) -> Entry | None:
        """Take the lease on ``doc_id`` for ``lease_s`` seconds unless another process holds a live one.

        :param owner: who takes it (released only by the same owner).
        :returns: the entry as it is now that the lease is ours (a value may already be there,
            written since the caller last read it), or ``None`` when someone else holds the lease.
        """
        # No document, or one whose lease has lapsed: the upsert takes it. A live lease makes the
        # filter miss an existing _id, so the upsert's insert fails with a duplicate key (MongoDB)
        # or the call changes nothing and returns None (the embedded store).
        return self._lease(doc_id, {"lease_until": {"$lt": self._clock()}}, owner, lease_s, upsert=True)

    def release_leases_of(self, owner_prefix: str) -> int:
        """End every lease whose owner starts with ``owner_prefix`` (a process known to be dead).

        :returns: how many were released.
        """
        import re
        result = self._collection.update_many(
            {"owner": {"$regex": "^" + re.escape(owner_prefix)}, "lease_until": {"$gt": 0.0}},
            {"$set": {"lease_until": 0.0, "owner": ""}})
        return result.modified_count

    def take_over(self, doc_id: str, dead_owner: str, owner: str, lease_s: float) -> Entry | None:
        """Take the lease on ``doc_id`` from ``dead_owner`` (a process known to be gone).

        :returns: as :meth:`acquire`; ``None`` when another process took it first.
        """
        return self._lease(doc_id, {"owner": dead_owner}, owner, lease_s, upsert=False)

    def _lease(self, doc_id: str, condition: dict, owner: str, lease_s: float, upsert: bool) -> Entry | None:
        from pymongo import ReturnDocument
        from pymongo.errors import DuplicateKeyError
        now = self._clock()
        try:
            doc = self._collection.find_one_and_update(
                {"_id": doc_id, **condition}, {"$set": {"lease_until": now + lease_s, "owner": owner}},
                upsert=upsert, return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:
            return None
        return None if doc is None else Entry.of(doc, now)

    def release(self, doc_id: str, owner: str) -> None:
        """End ``owner``'s lease on ``doc_id`` (a lease taken over by someone else is left alone)."""
        self._collection.update_one({"_id": doc_id, "owner": owner}, {"$set": {"lease_until": 0.0}})


def cache_id(key: str) -> str:
    """:returns: the document id of cache key ``key`` (long or unusual keys are hashed)."""
    if not isinstance(key, str):
        raise TypeError(f"cache keys are str, not {type(key).__name__}")
    if _PLAIN_KEY.match(key):
        return _CACHE_PREFIX + key
    return _HASHED_PREFIX + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class Cache:
    """The module's cache: ``get(key, default=None)``, ``set(key, value, timeout)``, ``delete(key)``.

    Entries live in the module's database, so they survive a restart of the
    sandbox and every process of the module sees them. Values are anything
    msgpack carries (numpy values are converted; tuples read back as lists).

    :param store: the module's :class:`CacheStore`.
    """

    def __init__(self, store: CacheStore):
        self._store = store

    def get(self, key: str, default=None):
        """:returns: the value stored under ``key`` if it has not expired, else ``default``.

        :raises TypeError: ``key`` is not a ``str``.
        """
        data = self._store.read(cache_id(key)).data
        return default if data is None else unpack(data)

    def set(self, key: str, value, timeout: float | None = 300) -> None:
        """Store ``value`` under ``key`` for ``timeout`` seconds (``None``: until deleted).

        :raises TypeError: ``key`` is not a ``str``, or msgpack cannot carry ``value``.
        """
        self._store.write(cache_id(key), pack(value), timeout)

    def delete(self, key: str) -> None:
        """Forget ``key`` (missing is fine)."""
        self._store.remove(cache_id(key))
