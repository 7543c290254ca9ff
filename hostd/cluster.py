"""This node among others sharing one store: its id, which modules it runs, what it leases.

Several hostd nodes may share one MongoDB (event log, cursors, module databases,
files). Each ingests what it receives. :class:`Cluster` gathers what a node
needs for that:

* its id (``cluster.node_id``, else the host name and a random id kept in the
  data dir), shown in ``/healthz`` and ``/modules``;
* its :class:`ModulePlacement` (``modules.enable`` / ``modules.disable``);
* the consumers of the handlers it runs (partitioned ones split by a
  :class:`~hostd.partitions.Partitioner`), the leases it wants for them and for
  its cron tasks, kept by a :class:`~hostd.leases.LeaseKeeper`;
* the :class:`~hostd.gaps.GapWatch` its delivery threads read the log through.

Delivery asks :meth:`Cluster.claim` before feeding a consumer and the cron
thread :meth:`Cluster.may_run` before starting a task; both answer from memory.
"""
from __future__ import annotations

import fnmatch
import secrets
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

from .gaps import GapWatch
from .leases import LeaseKeeper, LeaseTable
from .partitions import Partitioner

__all__ = ["Cluster", "ModulePlacement", "node_identity", "handler_lease", "cron_lease"]


def handler_lease(module: str, consumer: str) -> str:
    """:returns: the lease name of a handler consumer (``handler`` or ``handler#k``)."""
    return f"h|{module}|{consumer}"


def cron_lease(module: str, task: str) -> str:
    """:returns: the lease name of a cron task's schedule."""
    return f"c|{module}|{task}"


def node_identity(configured: str, data_dir: Path) -> tuple[str, str]:
    """:returns: ``(node id, lease holder token)``; the token adds the data dir's own random id,
        so two nodes given the same id by mistake still never share a lease, and a node
        restarted on its data dir finds its leases again."""
    path = Path(data_dir) / "node.id"
    try:
        stored = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        stored = secrets.token_hex(4)
        path.write_text(stored + "\n", encoding="ascii")
    node = configured or f"{socket.gethostname()}-{stored}"
    return node, f"{node}|{stored}"


class ModulePlacement:
    """Which modules this node runs.

    :param enable: names or shell patterns of the modules to run.
    :param disable: names or patterns of modules not to run even if enabled.
    """

    def __init__(self, enable, disable):
        self.enable, self.disable = list(enable), list(disable)

    def runs(self, name: str) -> bool:
        """:returns: whether this node runs module ``name``."""
        return any(fnmatch.fnmatchcase(name, p) for p in self.enable) and \
            not any(fnmatch.fnmatchcase(name, p) for p in self.disable)

    def restrict(self, discovery):
        """:returns: ``discovery`` without the modules this node does not run; the event
            properties of every module found stay (handlers here may filter on them)."""
        return replace(discovery, folders={n: f for n, f in discovery.folders.items() if self.runs(n)},
                       errors={n: e for n, e in discovery.errors.items() if self.runs(n)})


class Cluster:
    """This node's part in a cluster (a single node is a cluster of one).

    :param config: the host's config (``cluster.*``, ``modules.enable``/``disable``).
    :param data_dir: the node's data dir (where its random id is kept).
    :param state_db: hostd's state database (leases, nodes).
    :param cursors: the :class:`~hostd.eventlog.Cursors` (positions of consumers held elsewhere).
    :param voids_between: :meth:`~hostd.eventlog.EventLog.voids_between`.
    """

    def __init__(self, config, data_dir, state_db, cursors, voids_between=None):
        self.node, holder = node_identity(config["cluster.node_id"], data_dir)
        self.placement = ModulePlacement(config["modules.enable"], config["modules.disable"])
        self.partitions = Partitioner(config["cluster.partitions"])
        self.gaps = GapWatch(config["cluster.gap_grace_s"], voids_between)
        self.keeper = LeaseKeeper(LeaseTable(state_db), self.node, holder, config["cluster.lease_s"])
        self._cursors = cursors
        self._positions: dict = {}   # (module, handler) -> (seq, read at): realtime waits
        self._lock = threading.Lock()

    # -- what delivery and cron ask ------------------------------------------------
    def consumers(self, routes) -> list:
        """:returns: the consumers feeding ``routes`` (see :class:`~hostd.partitions.Partitioner`)."""
        return self.partitions.consumers(routes)

    def claim(self, module: str, consumer: str) -> int | None:
        """:returns: the lease epoch when this node may feed the consumer now, else None."""
        return self.keeper.epoch(handler_lease(module, consumer))

    def may_run(self, module: str, task: str) -> bool:
        """:returns: whether this node schedules the cron task now."""
        return self.keeper.epoch(cron_lease(module, task)) is not None

    def contiguous(self, after: int, docs: list[dict]) -> list[dict]:
        """:returns: the start of a log page with no gap still worth waiting for."""
        return self.gaps.contiguous(after, docs)

    def holder(self, module: str, consumer: str) -> str | None:
        """:returns: the node feeding the consumer, as last seen."""
        return self.keeper.holder(handler_lease(module, consumer))

    def cron_holder(self, module: str, task: str) -> str | None:
        """:returns: the node scheduling the cron task, as last seen."""
        return self.keeper.holder(cron_lease(module, task))

    def position(self, local, module: str, handler: str, max_age_s: float = 0.05) -> int | None:
        """Where a handler is: from ``local`` (``local(module, handler)``) when this node feeds
        it, else its cursor in the store (read at most every ``max_age_s``)."""
        if self.claim(module, handler) is not None:
            return local(module, handler)
        now = time.monotonic()
        with self._lock:
            cached = self._positions.get((module, handler))
        if cached is not None and now - cached[1] < max_age_s:
            return cached[0]
        seq = self._cursors.get(module, handler)
        with self._lock:
            self._positions[(module, handler)] = (seq, now)
        return seq

    # -- what the host tells it ----------------------------------------------------------
    def follow(self, routes, records: dict) -> None:
        """Want the leases of the consumers of ``routes`` and of the running modules' cron tasks."""
        names = {handler_lease(c.module, c.name) for c in self.consumers(routes)}
        names |= {cron_lease(r["name"], e["name"]) for r in records.values() if r.get("state") == "running"
                  for e in r.get("endpoints") or [] if e["class"] == "cron"}
        self.keeper.want(names)

    def start(self) -> None:
        """Start keeping leases."""
        self.keeper.start()

    def stop(self) -> None:
        """Give the leases back (call once delivery and cron stopped)."""
        if self.keeper.is_alive():
            self.keeper.stop()
            self.keeper.join(10)
