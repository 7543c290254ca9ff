"""Handler filters: MongoDB-style query documents over an event and its properties.

One filter is evaluated in two places. hostd, which never runs module code,
evaluates the part of it that reads raw event fields (:func:`raw_part`): a
necessary condition, so no matching event is held back. The consuming sandbox,
which has the event properties, evaluates the whole filter before calling the
handler (:func:`compile_filter` with its registry) and acknowledges the events
that do not match without calling it. A filter without property paths is
decided in hostd alone.
"""
from __future__ import annotations

import mongoquery

from .events import Event

__all__ = ["compile_filter", "filter_paths", "raw_part"]

_LOGICAL_ALL = "$and"
_LOGICAL_ANY = "$or"


def filter_paths(filter_doc) -> set[str]:
    """:returns: every field path a MongoDB-style filter names (through $and/$or/$nor/$not)."""
    paths = set()
    if isinstance(filter_doc, dict):
        for key, value in filter_doc.items():
            if not key.startswith("$"):
                paths.add(key)
            if isinstance(value, (dict, list)):
                paths |= filter_paths(value) if key.startswith("$") else set()
    elif isinstance(filter_doc, list):
        for item in filter_doc:
            paths |= filter_paths(item)
    return paths


def raw_part(filter_doc: dict | None, is_property_path) -> dict | None:
    """The weakest condition on raw fields implied by ``filter_doc``.

    Clauses on property paths are dropped (they hold or not in the sandbox); an
    ``$or`` keeps its branches' raw parts unless one branch has none; ``$nor``
    and other operators over property paths are dropped whole.

    :param is_property_path: ``f(path) -> bool``.
    :returns: a filter every event matching ``filter_doc`` also matches; ``{}``
        when nothing can be decided on raw fields; ``None`` for no filter.
    """
    if not filter_doc:
        return filter_doc

    def reduce(doc: dict) -> dict:
        kept = {}
        for key, value in doc.items():
            if key == _LOGICAL_ALL and isinstance(value, list):
                parts = [reduce(item) for item in value if isinstance(item, dict)]
                parts = [p for p in parts if p]
                if parts:
                    kept[key] = parts
            elif key == _LOGICAL_ANY and isinstance(value, list):
                parts = [reduce(item) for item in value if isinstance(item, dict)]
                if parts and all(parts):
                    kept[key] = parts
            elif not any(is_property_path(p) for p in filter_paths({key: value})):
                kept[key] = value
        return kept
    return reduce(filter_doc)


def _set_path(document: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        child = document.get(part)
        document[part] = child = dict(child) if isinstance(child, dict) else {}
        document = child
    document[leaf] = value


def compile_filter(filter_doc: dict | None, module: str, properties=None, names_source: bool | None = None):
    """:returns: a predicate over log documents (``{"event", "source", "seq"}``) for a handler's ``filter``.

    Paths that start with an event property (``tincan.verb.id``) are matched
    against the property's value, computed through ``properties`` (a registry
    with ``property_prefix`` and ``value_at``); without one, every path is a raw
    field. Without a filter a module does not receive the events it emitted
    itself, so chains of emitting modules cannot loop by accident; a filter that
    names ``source`` decides for itself.

    :param names_source: whether the handler's whole filter names ``source`` (when
        ``filter_doc`` is only its raw part); by default, whether ``filter_doc`` does.
    """
    own = f"module:{module}"
    with_source = "source" in filter_paths(filter_doc) if names_source is None else names_source
    if not filter_doc:
        return (lambda doc: True) if with_source else (lambda doc: doc.get("source") != own)
    query = mongoquery.Query(filter_doc)
    property_paths = sorted(p for p in filter_paths(filter_doc)
                            if properties is not None and properties.property_prefix(p))

    def document(doc):
        view = doc["event"]
        if with_source or property_paths:
            view = dict(view, source=doc.get("source")) if with_source else dict(view)
        if property_paths:
            event = doc.get("evt") or Event(doc["event"], {"seq": doc.get("seq"), "source": doc.get("source")},
                                            properties)
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
