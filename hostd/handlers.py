"""The handler table: every running event handler with its filter, compiled once.

The event path starts here. When the module table changes, the host gives the
running modules' records to :meth:`HandlerTable.update`; each handler becomes a
:class:`HandlerRoute` whose filter is compiled then, and kept for as long as
the handler's options and the event properties stay the same. hostd runs no
module code, so a route matches on the raw fields its filter names; clauses on
event properties are decided by the handler's sandbox, which acknowledges the
events they reject without calling the handler. The ingest thread asks the
table which realtime handlers a request's events may match; the delivery
threads ask it which handlers of their modes to feed. Both use the same
compiled predicates.
"""
from __future__ import annotations

import threading

from sandbox.filters import compile_filter, filter_paths, raw_part

__all__ = ["HandlerRoute", "HandlerTable"]


class HandlerRoute:
    """One running handler: its module, name, options and compiled filter.

    :param module: the module's name.
    :param description: the handler's endpoint description (``name``, ``options``).
    :param catalog: the :class:`~hostd.catalog.PropertyCatalog` telling property paths from raw fields.
    """

    __slots__ = ("module", "name", "options", "mode", "matches", "exact")

    def __init__(self, module: str, description: dict, catalog=None):
        self.module = module
        self.name = description["name"]
        self.options = description.get("options") or {}
        self.mode = self.options.get("mode", "queued")
        whole = self.options.get("filter")
        raw = raw_part(whole, catalog.is_property_path) if catalog is not None else whole
        #: whether :attr:`matches` decides alone (else the sandbox checks property clauses)
        self.exact = raw == whole
        #: ``matches(log document) -> bool``: true for every event the whole filter matches
        self.matches = compile_filter(raw, module, names_source="source" in filter_paths(whole))

    @property
    def key(self) -> tuple[str, str]:
        """``(module, handler)``."""
        return self.module, self.name


class HandlerTable:
    """The routes of every running module's handlers; safe to read from any thread."""

    def __init__(self):
        self._routes: tuple[HandlerRoute, ...] = ()
        self._properties = None
        self._lock = threading.Lock()

    def update(self, records: dict, properties) -> None:
        """Take the handlers of the running modules among ``records`` (module table records).

        A route whose handler, options and properties did not change is kept as it is.
        """
        with self._lock:
            kept = {} if properties is not self._properties else \
                {(r.module, r.name): r for r in self._routes}
            routes = []
            for record in records.values():
                if record.get("state") != "running":
                    continue
                for endpoint in record.get("endpoints") or []:
                    if endpoint["class"] != "handler":
                        continue
                    route = kept.get((record["name"], endpoint["name"]))
                    if route is None or route.options != (endpoint.get("options") or {}):
                        route = HandlerRoute(record["name"], endpoint, properties)
                    routes.append(route)
            self._routes, self._properties = tuple(routes), properties

    def routes(self, modes=("realtime", "queued", "batch"), module: str | None = None) -> list[HandlerRoute]:
        """:returns: the running handlers of those modes (of one module, if given)."""
        return [r for r in self._routes if r.mode in modes and (module is None or r.module == module)]

    def realtime_matches(self, events: list[dict], source: str) -> dict:
        """:returns: ``{(module, handler): [indexes of the events it may match]}`` of the
            realtime handlers matching one of ``events`` (exactly, or on their raw fields when
            their sandbox decides property clauses)."""
        docs = [{"event": event, "source": source} for event in events]
        found = {}
        for route in self.routes(("realtime",)):
            hits = [i for i, doc in enumerate(docs) if route.matches(doc)]
            if hits:
                found[route.key] = hits
        return found
