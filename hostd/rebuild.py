"""Rebuilding a module's data: drop it and replay its handlers from the start of the log.

An author who fixed a bug in an aggregation runs ``hostd rebuild MODULE`` (or
``--handler NAME``). :meth:`Rebuilds.start` pauses both delivery threads
between rounds, drops the module's collections (all of them, or only those the
handler declares with ``@event_handler(collections=[...])``; collections whose
names start with ``_`` belong to the runtime, such as the cache, and are kept),
moves the handlers' cursors back to 0, and marks the module ``rebuilding``.
Until its handlers are past the log's head as of the start, the module's views
and queries answer 503 ``rebuilding`` rather than half-computed numbers; the
host's monitor thread calls :meth:`Rebuilds.check` to clear the mark.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time

from sandbox.errors import BadParameter, EndpointNotFound, ModuleNotRunning

from .supervisor import ModuleState, RebuildState

__all__ = ["Rebuilds"]

log = logging.getLogger("insights.rebuild")


class Rebuilds:
    """The rebuilds in progress.

    :param modules: the host's :class:`~hostd.modules.ModuleSet`.
    :param handlers: the :class:`~hostd.handlers.HandlerTable`.
    :param deliveries: the :class:`~hostd.delivery.Delivery` threads.
    :param storage: the :class:`~hostd.storage.HostStorage` (client, log, cursors).
    """

    def __init__(self, modules, handlers, deliveries, storage):
        self._modules = modules
        self._handlers = handlers
        self._deliveries = tuple(deliveries)
        self._storage = storage
        self._active: dict = {}   # module -> (handler names, target seq)
        self._lock = threading.Lock()

    def start(self, module: str, handler: str | None = None) -> dict:
        """Drop the data and rewind the handlers. :returns: ``{"handlers", "target", "dropped"}``.

        :raises EndpointNotFound: no such module or handler; :raises ModuleNotRunning: it is not
            running; :raises BadParameter: the handler declares no collections of its own.
        """
        supervisor = self._modules.get(module)
        if supervisor is None:
            raise EndpointNotFound(f"no module named {module!r}")
        if supervisor.state is not ModuleState.RUNNING:
            raise ModuleNotRunning(f"module {module!r} is {supervisor.state}: it can be rebuilt once it runs")
        routes = self._handlers.routes(module=module)
        if handler is not None:
            routes = [r for r in routes if r.name == handler]
            if not routes:
                raise EndpointNotFound(f"module {module!r} has no handler {handler!r}")
            if routes[0].options.get("collections") is None:
                raise BadParameter("handler", f"{handler!r} does not declare its collections"
                                   " (@event_handler(collections=[...])): rebuild the whole module instead")
        names = [r.name for r in routes]
        database = self._storage.client[f"mod_{module}"]
        with self._paused():
            target = self._storage.eventlog.head()
            if handler is None:
                dropped = [c for c in database.list_collection_names() if not c.startswith("_")]
            else:
                dropped = list(routes[0].options["collections"])
            for collection in dropped:
                database.drop_collection(collection)
            self._rewind(module, names, 0)
            with self._lock:
                self._active[module] = (names, target)
        supervisor.signal(RebuildState(True))
        # answer once the mark is published: from then on web workers say 503 rebuilding
        deadline = time.time() + 5.0
        while not (self._modules.snapshot().modules.get(module) or {}).get("rebuilding") \
                and module in self._active and time.time() < deadline:
            time.sleep(0.01)
        log.info("module %s: rebuilding %s up to seq %d (dropped %s)", module, ", ".join(names) or "nothing",
                 target, ", ".join(dropped) or "nothing")
        return {"handlers": names, "target": target, "dropped": dropped}

    def redeliver(self, module: str, after_seq: int) -> int:
        """Deliver every logged event after ``after_seq`` again to the module's running handlers,
        as happens when a sandbox dies before acknowledging (tests of exactness use it).

        :returns: the log's head: the handlers are done once past it.
        """
        names = [r.name for r in self._handlers.routes(module=module)]
        with self._paused():
            self._rewind(module, names, after_seq)
            return self._storage.eventlog.head()

    def _paused(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        for thread in self._deliveries:
            stack.enter_context(thread.paused())
        return stack

    def _rewind(self, module: str, names: list, position: int) -> None:
        self._storage.cursors.set_many([(module, name, position) for name in names])
        for thread in self._deliveries:
            thread.rewind(module, names, position)

    def check(self) -> None:
        """Clear the mark of each module whose handlers caught up (the monitor thread calls it)."""
        with self._lock:
            active = list(self._active.items())
        for module, (names, target) in active:
            positions = [max((t.position(module, n) or 0) for t in self._deliveries) for n in names]
            if all(p >= target for p in positions):
                with self._lock:
                    self._active.pop(module, None)
                supervisor = self._modules.get(module)
                if supervisor is not None:
                    supervisor.signal(RebuildState(False))
                log.info("module %s: rebuilt", module)
