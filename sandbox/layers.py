"""Data layers imported on first use, inside the sandbox that uses them.

hostd hands every sandbox the catalog of data layers: each layer's origin, its
``properties.py`` and what it declared when a confined probe imported it
(``hostd`` itself never imports one). A :class:`LayeredRegistry` answers
``evt.tincan.actor`` and filter paths like ``tincan.verb.id`` from that catalog
and imports a layer's file only when one of its properties (or the event
source such a property dispatches on) is first needed. So a layer that loops,
exits or raises at import hurts only the sandboxes that use its namespace, and
a module that uses no properties imports none.
"""
from __future__ import annotations

from .errors import ModuleLoadError
from .properties import PropertyIndex, PropertyRegistry, _registry, entry_point_plugin, module_plugin

__all__ = ["LayeredRegistry", "describe_plugin"]


def describe_plugin(plugin) -> dict:
    """:returns: what a loaded ``properties.py`` declares, as the catalog carries it:
        ``{"properties": [[namespace, name, source, doc], ...], "sources": [name, ...]}``."""
    registry = _registry([("probe", plugin)])
    entries = []
    for (namespace, name), impls in registry._impls.items():
        for source, func in impls.items():
            entries.append([namespace, name, source, (func.__doc__ or "").strip()])
    return {"properties": entries, "sources": sorted(registry._predicates)}


class LayeredRegistry(PropertyRegistry):
    """A registry over the catalog of data layers, importing each layer on first use.

    :param layers: ``[{"origin", "file", "properties": [[ns, name, source, doc]], "sources": [...]}]``;
        ``origin`` is ``"module <name>"`` (its ``file`` is a ``properties.py``) or
        ``"package <entry point>"`` (an installed package).
    :param failed: ``{origin: why}`` of layers that could not be described (named in errors).
    """

    def __init__(self, layers=(), failed=None):
        super().__init__()
        self._files = {layer["origin"]: layer["file"] for layer in layers}
        self.index = PropertyIndex(
            [(layer["origin"], *entry) for layer in layers for entry in layer.get("properties", [])],
            [(layer["origin"], name) for layer in layers for name in layer.get("sources", [])])
        self._failed = dict(failed or {})
        self._plugins: dict = {}
        self._loaded = PropertyRegistry()

    def _load(self, origins) -> None:
        missing = sorted(o for o in origins if o not in self._plugins)
        if not missing:
            return
        for origin in missing:
            kind, _, name = origin.partition(" ")
            self._plugins[origin] = entry_point_plugin(name) if kind == "package" \
                else module_plugin(self._files[origin], name)
        self._loaded = _registry(sorted(self._plugins.items()))

    def _needed(self, namespace, name) -> set:
        origins = set(self.index.origins(namespace, name))
        for source in self.index.sources_used(namespace, name):
            declared = self.index.source_origin(source)
            if declared is not None:
                origins.add(declared)
        return {o for o in origins if o in self._files}

    def _implementations(self, namespace, name) -> dict:
        self._load(self._needed(namespace, name))
        return self._loaded._implementations(namespace, name)

    def _source_predicates(self) -> dict:
        return self._loaded._source_predicates()

    def unknown(self, namespace, name) -> AttributeError:
        error = super().unknown(namespace, name)
        if self._failed:
            broken = "; ".join(f"{origin}: {why}" for origin, why in sorted(self._failed.items()))
            error = AttributeError(f"{error} - data layers that failed to load: {broken}")
        return error

    def preload(self, paths) -> None:
        """Import the layers behind these filter paths now (a handler's filter, at start-up).

        :raises ModuleLoadError: one of them failed to import, or a path names the namespace of a
            layer that failed to load (by the convention that a layer's namespace is its module's name).
        """
        for path in paths:
            key = self.index.property_prefix(path)
            if key is not None:
                self._load(self._needed(*key))
                continue
            broken = f"module {path.split('.')[0]}"
            if broken in self._failed:
                raise ModuleLoadError(f"filter path {path!r} needs the data layer of {broken}, which failed"
                                      f" to load: {self._failed[broken]}")

    @property
    def imported(self) -> list[str]:
        """The origins whose ``properties.py`` this process imported."""
        return sorted(self._plugins)

