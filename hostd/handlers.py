"""The handler table: every running event handler with its filter, compiled once.

The event path starts here. When the module table changes, the host gives the
running modules' records to :meth:`HandlerTable.update`; each handler becomes a
:class:`HandlerRoute` whose filter is compiled then, and kept for as long as
the handler's options and the event properties stay the same. The ingest thread
asks the table which realtime handlers a request's events match; the delivery
threads ask it which handlers of their modes to feed. Both use the same
compiled predicates.
"""
from __future__ import annotations

import threading

import mongoquery

from sandbox.events import Event

__all__ = ["HandlerRoute", "HandlerTable", "compile_filter"]


def _filter_paths(filter_doc) -> set[str]:
    """:returns: every field path a MongoDB-style filter names (through $and/$or/$nor/$not)."""
    paths = set()
    if isinstance(filter_doc, dict):
        for key, value in filter_doc.items():
            if not key.startswith("$"):
                paths.add(key)
            if isinstance(value, (dict, list)):
                paths |= _filter_paths(value) if key.startswith("$") else set()
    elif isinstance(filter_doc, list):
        for item in filter_doc:
            paths |= _filter_paths(item)
    return paths


def _set_path(document: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        child = document.get(part)
        document[part] = child = dict(child) if isinstance(child, dict) else {}
        document = child
    document[leaf] = value


def compile_filter(filter_doc: dict | None, module: str, properties=None):
    """:returns: a predicate over log documents for a handler's ``filter``.

    Paths of the filter that start with an event property (``tincan.verb.id``)
    are matched against the property's value, computed here in hostd. Without a
    filter a module does not receive the events it emitted itself, so chains of
    emitting modules cannot loop by accident; a filter that names ``source``
    decides for itself.
    """
    own = f"module:{module}"
    if not filter_doc:
        return lambda doc: doc.get("source") != own
    query = mongoquery.Query(filter_doc)
    with_source = "source" in _filter_paths(filter_doc)
    property_paths = sorted(p for p in _filter_paths(filter_doc)
                            if properties is not None and properties.property_prefix(p))

    def document(doc):
        view = doc["event"]
        if with_source or property_paths:
            view = dict(view, source=doc.get("source")) if with_source else dict(view)
        if property_paths:
            event = Event(doc["event"], {"seq": doc.get("seq"), "source": doc.get("source")}, properties)
            for path in property_paths:
                try:
                    _, value = properties.value_at(event, path)
                except Exception:  # a property that cannot read this event: the path is absent
                    continue
                _set_path(view, path, value)
        return view

    if with_source:
        return lambda doc: query.match(document(doc))
    return lambda doc: doc.get("source") != own and query.match(document(doc))


class HandlerRoute:
    """One running handler: its module, name, options and compiled filter.

    :param module: the module's name.
    :param description: the handler's endpoint description (``name``, ``options``).
    :param properties: the event properties its filter may name.
    """

    __slots__ = ("module", "name", "options", "mode", "matches")

    def __init__(self, module: str, description: dict, properties=None):
        self.module = module
        self.name = description["name"]
        self.options = description.get("options") or {}
        self.mode = self.options.get("mode", "queued")
        #: ``matches(log document) -> bool``
        self.matches = compile_filter(self.options.get("filter"), module, properties)

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

    def realtime_matches(self, events: list[dict], source: str) -> list[tuple[str, str]]:
        """:returns: ``(module, handler)`` of every realtime handler matching one of ``events``."""
        docs = [{"event": event, "source": source} for event in events]
        return [route.key for route in self.routes(("realtime",))
                if any(route.matches(doc) for doc in docs)]
