"""Leases in the store: which node feeds a handler (or partition) or runs a cron task.

Every node sharing a store may run the same module; each of its consumers
(handler, handler partition, cron task) must run on one node at a time. A
lease is one document of hostd's ``leases`` collection::

    {"_id": "h|module|handler#2", "holder": "<node>|<data-dir id>", "node": "<node>",
     "until": 1764.3, "reserved_for": "", "reserved_until": 0.0}

:class:`LeaseTable` takes and renews them with single-document updates (no
transactions); :class:`LeaseKeeper` is the thread that keeps this node's.

Rules the keeper follows:

* It renews what it holds every ``lease_s / 4``. A lease is *usable* (the
  delivery and cron threads may feed it) only until half of ``lease_s`` after
  the start of its last successful renewal: a node whose renewals stall stops
  feeding well before another node may take the lease over.
* It takes leases that expired (their holder died or gave them back).
* Leases spread over nodes: each node publishes, in the ``nodes`` collection,
  the lease names it wants (those of the modules it runs) with a heartbeat.
  Of the names wanted by one same set of live nodes, each node should hold at
  most its share (their number divided by the nodes', rounded up). A node at
  its share leaves a free name to a node below it; a node above its share (at
  two passes in a row) hands one name per pass over to the node of the set
  holding the fewest: it stops feeding it at once, stops renewing it and
  reserves it for that node, which takes it when it expires (others may only
  half a lease later). Only the excess moves: a node joining or leaving does
  not reshuffle the others.
* On a clean stop it gives every lease back, so other nodes take over at once.

Clocks: ``until`` is wall-clock time compared across nodes, so nodes' clocks
must agree to well under ``lease_s / 2`` (NTP does).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, defaultdict

import pymongo
import pymongo.errors
from pymongo.read_concern import ReadConcern

__all__ = ["LeaseTable", "LeaseKeeper", "shares"]

log = logging.getLogger("insights.leases")


class LeaseTable:
    """The ``leases`` and ``nodes`` collections of hostd's state database.

    :param db: hostd's state database.
    """

    def __init__(self, db):
        # on a replica set, a lease must survive a failover, or two nodes could hold it
        durable = {"write_concern": pymongo.WriteConcern(w="majority"), "read_concern": ReadConcern("majority")}
        self._leases = db.get_collection("leases", **durable)
        self._nodes = db.get_collection("nodes", **durable)

    def renew(self, name: str, holder: str, lease_s: float, now: float) -> bool:
        """Extend a lease ``holder`` holds. :returns: whether it still held it."""
        return self._leases.update_one({"_id": name, "holder": holder},
                                       {"$set": {"until": now + lease_s, "reserved_for": "",
                                                 "reserved_until": 0.0}}).matched_count == 1

    def take(self, name: str, holder: str, node: str, lease_s: float, now: float) -> bool:
        """Take a lease that expired and is not reserved for another node. :returns: whether taken."""
        fields = {"holder": holder, "node": node, "until": now + lease_s, "reserved_for": "",
                  "reserved_until": 0.0}
        # update_one + upsert, not find_one_and_update: see the store notes (the embedded store's
        # find_one_and_update does nothing when its upsert meets an existing document)
        attempts = (({"_id": name, "until": {"$lt": now}, "reserved_until": {"$lt": now}}, True),
                    ({"_id": name, "until": {"$lt": now}, "reserved_for": node}, False))
        for query, upsert in attempts:
            try:
                result = self._leases.update_one(query, {"$set": fields}, upsert=upsert)
            except pymongo.errors.DuplicateKeyError:  # it exists and is held or reserved
                continue
            if result.matched_count or result.upserted_id is not None:
                return True
        return False

    def reserve(self, name: str, holder: str, node: str, lease_s: float, now: float) -> None:
        """Hand a lease ``holder`` holds over to ``node`` once it expires."""
        self._leases.update_one({"_id": name, "holder": holder},
                                {"$set": {"reserved_for": node, "reserved_until": now + 1.5 * lease_s}})

    def release(self, names, holder: str) -> None:
        """Give leases back at once."""
        if names:
            self._leases.update_many({"_id": {"$in": list(names)}, "holder": holder},
                                     {"$set": {"until": 0.0, "reserved_until": 0.0}})

    def all(self, limit: int = 100_000) -> dict:
        """:returns: ``{name: lease document}`` of every lease."""
        return {d["_id"]: d for d in self._leases.find({}).limit(limit)}

    def heartbeat(self, node: str, wants, lease_s: float, now: float) -> None:
        """Say this node is alive and which leases it wants."""
        self._nodes.update_one({"_id": node}, {"$set": {"until": now + lease_s, "beat": now,
                                                        "wants": sorted(wants)}}, upsert=True)

    def leave(self, node: str) -> None:
        """This node stops (clean shutdown)."""
        self._nodes.delete_one({"_id": node})

    def live_nodes(self, now: float, lease_s: float) -> dict:
        """:returns: ``{node: (set of wanted names, last heartbeat)}`` of the nodes that beat
            within the last lease."""
        docs = self._nodes.find({"beat": {"$gt": now - lease_s}}).limit(10_000)
        return {d["_id"]: (set(d.get("wants") or ()), d["beat"]) for d in docs}


def shares(nodes: dict) -> dict:
    """How many of each group of lease names a node should hold.

    :param nodes: ``{node: set of names it wants}``.
    :returns: ``{name: (group, quota)}``: ``group`` the sorted nodes wanting the name,
        ``quota`` the most names of that group one of them should hold (the group's names
        divided by its nodes, rounded up).
    """
    wanting = defaultdict(set)
    for node, names in nodes.items():
        for name in names:
            wanting[name].add(node)
    groups = Counter(tuple(sorted(group)) for group in wanting.values())
    out = {}
    for name, group in wanting.items():
        key = tuple(sorted(group))
        out[name] = (key, math.ceil(groups[key] / len(key)))
    return out


class LeaseKeeper(threading.Thread):
    """Takes, renews, hands over and gives back this node's leases.

    :param table: the :class:`LeaseTable`.
    :param node: this node's id.
    :param holder: this node's holder token (node id and data-dir id: unique, and the same
        after a restart, so a restarted node finds its leases again at once).
    :param lease_s: the lease duration.
    """

    def __init__(self, table: LeaseTable, node: str, holder: str, lease_s: float):
        super().__init__(name="insights-leases", daemon=True)
        self._table = table
        self.node = node
        self._holder = holder
        self.lease_s = lease_s
        self._wanted: frozenset = frozenset()
        self._held: dict = {}       # name -> (epoch, usable until: monotonic)
        self._holders: dict = {}    # name -> node, as last read
        self._shedding: dict = {}   # name -> the node it was to be handed to at the last pass
        self._epochs = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._ticked = threading.Event()

    # -- what the other threads ask ----------------------------------------------
    def want(self, names) -> None:
        """The leases this node wants now (those of the consumers it runs)."""
        names = frozenset(names)
        if names != self._wanted:
            self._wanted = names
            self._wake.set()

    def epoch(self, name: str) -> int | None:
        """:returns: a number that changes each time this node (re)gains lease ``name``, while
            the lease is usable; None when this node may not feed it."""
        with self._lock:
            held = self._held.get(name)
        if held is None or time.monotonic() >= held[1]:
            return None
        return held[0]

    def holder(self, name: str) -> str | None:
        """:returns: the node holding lease ``name`` when last looked (None: nobody)."""
        return self._holders.get(name)

    def wait_ticked(self, timeout_s: float) -> bool:
        """Block until a pass over the leases ended after this call (tests)."""
        self._ticked.clear()
        self._wake.set()
        return self._ticked.wait(timeout_s)

    def stop(self) -> None:
        """End the loop and give every lease back (call once the consumers stopped)."""
        self._stopping.set()
        self._wake.set()

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self.tick()
                except Exception:  # the store is away: leases lapse by themselves, try again
                    log.warning("leases: a pass failed", exc_info=True)
                self._ticked.set()
                self._wake.wait(self.lease_s / 4)
                self._wake.clear()
        finally:
            self._give_back()

    def _give_back(self) -> None:
        with self._lock:
            names, self._held = list(self._held), {}
        try:
            self._table.release(names, self._holder)
            self._table.leave(self.node)
        except pymongo.errors.PyMongoError:
            log.warning("leases: could not give them back; they expire in %g s", self.lease_s)

    def tick(self) -> None:
        """One pass: heartbeat, renew, hand over, take."""
        wanted = self._wanted
        now = time.time()
        self._table.heartbeat(self.node, wanted, self.lease_s, now)
        live = self._table.live_nodes(now, self.lease_s)
        fresh = {node for node, (_, beat) in live.items() if beat > now - self.lease_s / 2}
        share = shares({node: wants for node, (wants, _) in live.items()})
        leases = self._table.all()
        holding = {name: doc.get("node") for name, doc in leases.items() if doc.get("until", 0) >= now}
        counts = Counter((share[name][0], node) for name, node in holding.items() if name in share)
        with self._lock:
            held = dict(self._held)
        shed = self._excess(held, share, counts, fresh)
        for name in list(held):
            if name not in wanted:
                self._drop(name)
                self._table.release([name], self._holder)
            elif name in shed and self._shedding.get(name) == shed[name]:  # the same at two passes
                self._drop(name)   # stop feeding first, then tell the store
                self._table.reserve(name, self._holder, shed[name], self.lease_s, now)
                log.info("lease %s: handed over to node %s", name, shed[name])
            else:
                started = time.monotonic()
                if self._table.renew(name, self._holder, self.lease_s, time.time()):
                    self._keep(name, held[name][0], started)
                else:
                    self._drop(name)
                    log.warning("lease %s: lost (taken by another node)", name)
        self._shedding = shed
        for name in sorted(wanted - set(held)):
            lease = leases.get(name) or {}
            if lease.get("until", 0) >= now and lease.get("holder") != self._holder:
                continue   # held by another node
            if lease.get("reserved_for") not in (None, "", self.node) and lease.get("reserved_until", 0) >= now:
                continue   # handed over to another node (perhaps by this one)
            group, quota = share.get(name, ((self.node,), 1))
            if counts[(group, self.node)] >= quota and any(
                    counts[(group, node)] < quota for node in group if node != self.node and node in fresh):
                continue   # a node with fewer of these will take it
            started = time.monotonic()
            if lease.get("holder") == self._holder:
                taken = self._table.renew(name, self._holder, self.lease_s, time.time())
            else:
                taken = self._table.take(name, self._holder, self.node, self.lease_s, time.time())
            if taken:
                counts[(group, self.node)] += 1
                self._epochs += 1
                self._keep(name, self._epochs, started)
                log.info("lease %s: taken by this node", name)
        holders = {name: node for name, node in holding.items()}
        with self._lock:
            holders.update({name: self.node for name in self._held})
        self._holders = holders

    def _excess(self, held: dict, share: dict, counts: Counter, fresh: set) -> dict:
        """:returns: ``{name: node}``: for each group of names where this node holds more than its
            share, one name to hand over to the live node of the group holding the fewest."""
        shed = {}
        for group in {share[name][0] for name in held if name in share}:
            mine = sorted(name for name in held if name in share and share[name][0] == group)
            quota = share[mine[0]][1]
            if len(mine) <= quota:
                continue
            takers = [node for node in group if node != self.node and node in fresh
                      and counts[(group, node)] < quota]
            if takers:
                shed[mine[-1]] = min(takers, key=lambda node: (counts[(group, node)], node))
        return shed

    def _keep(self, name: str, epoch: int, started: float) -> None:
        with self._lock:
            self._held[name] = (epoch, started + self.lease_s / 2)

    def _drop(self, name: str) -> None:
        with self._lock:
            self._held.pop(name, None)
