"""The modules of a host: their supervisors, and the module table they publish.

:class:`ModuleSet` is driven by the host's monitor thread: it applies a
:class:`~hostd.discovery.Discovery` (at start and on hot reload), ticks every
supervisor, and publishes the module table (a file other processes read, see
:mod:`hostd.modtable`) whenever something changed. It also answers, when a
sandbox reports ready, whether its endpoint names are free.
"""
from __future__ import annotations

import logging
import threading
import time

from .modtable import Snapshot, write_table
from .supervisor import ModuleState, stop_all

__all__ = ["ModuleSet"]

log = logging.getLogger("insights.modules")


def _names(endpoints) -> set:
    """:returns: ``(class, name)`` of every view and query name (aliases too) of ``endpoints``."""
    return {(e["class"], n) for e in endpoints if e["class"] in ("view", "query")
            for n in [e["name"], *e.get("aliases", [])]}


class ModuleSet:
    """Every module's supervisor, by name.

    :param make_supervisor: ``make_supervisor(name, folder, error) -> ModuleSupervisor``
        (already failed when ``error`` is given).
    :param table_file: where the module table is published.
    :param on_publish: ``on_publish(records, properties)``, called with every published table.
    """

    def __init__(self, make_supervisor, table_file, on_publish=None):
        self._make = make_supervisor
        self._table_file = table_file
        self._on_publish = on_publish
        self._supervisors: dict = {}
        self._properties = None
        self._snapshot = Snapshot({})
        self._publish_lock = threading.Lock()
        #: set whenever a supervisor changed (the monitor thread waits on it)
        self.changed = threading.Event()

    # -- reading -----------------------------------------------------------------
    def get(self, name: str):
        """:returns: module ``name``'s supervisor, or None."""
        return self._supervisors.get(name)

    def names(self) -> list[str]:
        """:returns: the module names, sorted."""
        return sorted(self._supervisors)

    def signer_of(self, name: str):
        """:returns: the signer of module ``name``'s upcall channel, or None."""
        supervisor = self._supervisors.get(name)
        return supervisor.signer if supervisor is not None else None

    def report(self, name: str, signal) -> None:
        """Queue a sandbox's report (or hostd's) to module ``name``'s supervisor."""
        supervisor = self._supervisors.get(name)
        if supervisor is not None:
            supervisor.signal(signal)

    def record(self, name: str) -> dict | None:
        """:returns: module ``name``'s up-to-date record."""
        supervisor = self._supervisors.get(name)
        return supervisor.record() if supervisor else None

    def snapshot(self) -> Snapshot:
        """:returns: the last published table."""
        return self._snapshot

    def settled(self) -> bool:
        """:returns: whether no module is starting, restarting or stopped."""
        unsettled = (ModuleState.STARTING, ModuleState.RESTARTING, ModuleState.STOPPED)
        return all(s.state not in unsettled for s in list(self._supervisors.values()))

    def admit(self, module: str, endpoints: list) -> str | None:
        """:returns: why a ready sandbox's endpoints cannot be served (a name another module
        serves), or None."""
        ours = _names(endpoints)
        for other in list(self._supervisors.values()):
            if other.name == module or not other.endpoints or other.state is ModuleState.FAILED:
                continue
            clash = sorted(ours & _names(other.endpoints))
            if clash:
                kind, name = clash[0]
                return (f"{kind} {name!r} is defined by both module {other.name!r} ({other.path})"
                        f" and module {module!r} ({self._supervisors[module].path})")
        return None

    # -- changing (monitor thread) -------------------------------------------------
    def apply(self, discovery, names=None) -> None:
        """Start added, restart changed and stop removed modules.

        :param discovery: a :class:`~hostd.discovery.Discovery`.
        :param names: the module names to (re)consider; default: every name seen.
        """
        self._properties = discovery.properties
        for name in sorted(discovery.names() if names is None else names):
            old = self._supervisors.get(name)
            if old is not None:
                old.stop()  # changed or removed: its process goes before anyone is told
                self.publish()
                del self._supervisors[name]
            if name not in discovery.names():
                log.info("module %s removed", name)
                continue
            supervisor = self._make(name, discovery.folders.get(name), discovery.errors.get(name))
            if old is not None:
                supervisor.restarts = old.restarts
            self._supervisors[name] = supervisor
            if supervisor.state is not ModuleState.FAILED:
                supervisor.start()
        self.publish()

    def tick(self, now: float | None = None) -> None:
        """Tick every supervisor (one failing is logged, the others go on)."""
        for supervisor in list(self._supervisors.values()):
            try:
                supervisor.tick(now)
            except Exception:
                log.exception("supervising %s failed", supervisor.name)

    def stop(self, grace_s: float = 3.0) -> None:
        """Stop every sandbox at once (see :func:`~hostd.supervisor.stop_all`)."""
        if self._supervisors:
            stop_all(self._supervisors.values(), grace_s)
            self.publish()

    def publish(self) -> None:
        """Write the module table for the other processes (and refresh our snapshot)."""
        with self._publish_lock:
            self.changed.clear()
            records = {name: s.record() for name, s in list(self._supervisors.items())}
            table = {"modules": records,
                     "properties": self._properties.describe() if self._properties else [],
                     "published": time.time()}
            self._snapshot = Snapshot(table)
            write_table(self._table_file, table)
            if self._on_publish is not None:
                self._on_publish(records, self._properties)
