"""Event properties: derived, source-independent views of events (``evt.tincan.actor``).

A ``properties.py`` defines pure functions of an event::

    @event_source("edx")
    def is_edx(event):
        return "event_type" in event

    @event_property(namespace="tincan", name="actor", source="edx")
    def edx_actor(event):
        return {"objectType": "Agent", "account": {"name": event["username"]}}

A :class:`PropertyRegistry` is built per process from a pluggy plugin manager
(:func:`build_registry`); nothing is registered at import. For one (namespace,
name) there may be one implementation per source: dispatch calls the one whose
source matches the event, else each in turn until one returns non-None.
Namespaces may nest (``namespace="video.segment"``) or be absent (``evt.agent``).
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

import pluggy

from . import hookspecs
from .errors import ModuleLoadError

__all__ = ["event_property", "event_source", "PropertySpec", "PropertyRegistry", "module_plugin",
           "build_registry", "properties_file", "entry_point_plugin", "entry_point_names",
           "PropertyIndex", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "insights.properties"
_loads = itertools.count(1)
_PROPERTY = "__insights_property__"
_SOURCE = "__insights_source__"
_SOURCES_KEY = "__sources__"


@dataclass(frozen=True)
class PropertySpec:
    """What ``@event_property`` said about a function."""

    namespace: str | None
    name: str
    source: str | None


def event_property(name: str, namespace: str | None = None, source: str | None = None):
    """Mark ``f(event)`` as the property ``evt.<namespace>.<name>`` (for events of ``source``).

    :param name: the property's name.
    :param namespace: dotted namespace (``"tincan"``, ``"video.segment"``); ``None`` for none.
    :param source: the source this implementation is for (``None``: any event).
    """
    def mark(func):
        setattr(func, _PROPERTY, PropertySpec(namespace or None, name, source))
        return func
    return mark


def event_source(name: str):
    """Mark ``predicate(event) -> bool`` as recognising events of source ``name``."""
    def mark(func):
        setattr(func, _SOURCE, name)
        return func
    return mark


class _ModulePlugin:
    """A ``properties.py`` (or an entry-point module) seen as a pluggy plugin."""

    def __init__(self, module, origin: str):
        self.module = module
        self.origin = origin

    def _marked(self, attribute):
        return [v for v in vars(self.module).values() if callable(v) and hasattr(v, attribute)]

    @hookspecs.hookimpl
    def insights_event_properties(self):
        return self._marked(_PROPERTY)

    @hookspecs.hookimpl
    def insights_event_sources(self):
        return self._marked(_SOURCE)


def module_plugin(path: str | Path, origin: str) -> _ModulePlugin:
    """Import a ``properties.py`` file as a plugin.

    :param origin: what to call it in errors (the module's name).
    :raises ModuleLoadError: it failed to import (the message names ``origin``).
    """
    path = Path(path).resolve()
    # A package for the module's folder, without running its __init__.py (the module's code
    # runs only in its sandbox), so properties.py can import its siblings relatively.
    package_name = f"_insights_layer_{origin}_{next(_loads)}"
    package = importlib.util.module_from_spec(importlib.machinery.ModuleSpec(package_name, None, is_package=True))
    package.__path__ = [str(path.parent)]
    sys.modules[package_name] = package
    spec = importlib.util.spec_from_file_location(f"{package_name}.properties", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise ModuleLoadError(f"{origin}: {path} failed to load: {type(err).__name__}: {err}") from err
    return _ModulePlugin(module, origin)


class _Namespace:
    """``evt.tincan``: the properties under one namespace, bound to an event."""

    __slots__ = ("_registry", "_event", "_path")

    def __init__(self, registry, event, path):
        self._registry, self._event, self._path = registry, event, path

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return self._registry.resolve(self._event, name, self._path)

    def __dir__(self):
        return self._registry.names(self._path)

    def __repr__(self):
        return f"<properties {self._path}: {', '.join(self._registry.names(self._path))}>"


class PropertyIndex:
    """What properties and sources exist and who declares them, without their code.

    hostd builds one from the descriptions sandboxes report (it never imports a
    ``properties.py``); every :class:`PropertyRegistry` has one.

    :param entries: ``[(origin, namespace, name, source, doc)]``, one per implementation.
    :param sources: ``[(origin, source name)]`` of the declared event sources.
    :raises ModuleLoadError: two origins claim the same (namespace, name, source) or source name.
    """

    def __init__(self, entries=(), sources=()):
        self._origins: dict = {}   # (namespace, name, source) -> origin
        self._docs: dict = {}      # (namespace, name) -> first doc
        self._keys: dict = {}      # (namespace, name) -> [source, ...]
        self._sources: dict = {}   # source name -> origin
        self._namespaces: set = set()
        for origin, name in sources:
            if name in self._sources and self._sources[name] != origin:
                raise ModuleLoadError(f"event source {name!r} is declared by both {self._sources[name]}"
                                      f" and {origin}")
            self._sources[name] = origin
        for origin, namespace, name, source, doc in entries:
            key = (namespace or None, name, source)
            if key in self._origins and self._origins[key] != origin:
                raise ModuleLoadError(f"event property {self._label(*key)} is defined by both"
                                      f" {self._origins[key]} and {origin}")
            self._origins[key] = origin
            self._keys.setdefault(key[:2], []).append(source)
            if doc and key[:2] not in self._docs:
                self._docs[key[:2]] = doc
            parts = (namespace or "").split(".")
            for depth in range(1, len(parts) + 1) if namespace else ():
                self._namespaces.add(".".join(parts[:depth]))

    @staticmethod
    def _label(namespace, name, source=None) -> str:
        dotted = f"{namespace}.{name}" if namespace else name
        return f"{dotted!r} (source {source!r})" if source else repr(dotted)

    def has(self, namespace: str | None, name: str) -> bool:
        """Whether ``namespace.name`` is a property."""
        return (namespace, name) in self._keys

    def is_namespace(self, dotted: str) -> bool:
        """Whether ``dotted`` is a namespace (``tincan``, ``video.segment``)."""
        return dotted in self._namespaces

    def origins(self, namespace: str | None, name: str) -> set:
        """:returns: the origins implementing property ``namespace.name``."""
        return {self._origins[(namespace, name, s)] for s in self._keys.get((namespace, name), ())}

    def sources_used(self, namespace: str | None, name: str) -> set:
        """:returns: the source names property ``namespace.name`` has implementations for."""
        return {s for s in self._keys.get((namespace, name), ()) if s is not None}

    def source_origin(self, source: str) -> str | None:
        """:returns: the origin declaring event source ``source``."""
        return self._sources.get(source)

    def names(self, namespace: str | None = None) -> list[str]:
        """:returns: the property and sub-namespace names directly under ``namespace``."""
        prefix = f"{namespace}." if namespace else ""
        names = {name for (ns, name) in self._keys if ns == namespace}
        names |= {n[len(prefix):].split(".")[0] for n in self._namespaces
                  if n.startswith(prefix) and n != namespace}
        return sorted(names)

    def property_prefix(self, path: str) -> tuple | None:
        """:returns: ``(namespace, name)`` of the property a dotted path starts with, else None."""
        parts = path.split(".")
        for cut in range(len(parts), 0, -1):
            key = (".".join(parts[:cut - 1]) or None, parts[cut - 1])
            if key in self._keys:
                return key
        return None

    def describe(self) -> list[dict]:
        """:returns: the ``/event_properties`` list: namespace, name, sources, doc, modules."""
        out = []
        for (namespace, name), sources in sorted(self._keys.items(), key=lambda i: (i[0][0] or "", i[0][1])):
            doc = self._docs.get((namespace, name), "")
            out.append({"namespace": namespace, "name": name,
                        "sources": sorted(s for s in sources if s is not None) + (["*"] if None in sources else []),
                        "doc": doc.split("\n\n")[0],
                        "modules": sorted(self.origins(namespace, name))})
        return out

    def is_empty(self) -> bool:
        """Whether no property is known."""
        return not self._keys


class PropertyRegistry:
    """Every property and source known to one process, with their code.

    :param properties: ``[(origin, function)]`` of ``@event_property`` functions.
    :param sources: ``[(origin, function)]`` of ``@event_source`` predicates.
    :raises ModuleLoadError: two origins claim the same (namespace, name, source) or source name.
    """

    def __init__(self, properties=(), sources=()):
        self._impls: dict = {}      # (namespace, name) -> {source: function}
        self._predicates: dict = {}  # source name -> predicate
        entries = []
        for origin, func in properties:
            spec = getattr(func, _PROPERTY)
            entries.append((origin, spec.namespace, spec.name, spec.source, (func.__doc__ or "").strip()))
        self.index = PropertyIndex(entries, [(origin, getattr(p, _SOURCE)) for origin, p in sources])
        for origin, predicate in sources:
            self._predicates[getattr(predicate, _SOURCE)] = predicate
        for origin, func in properties:
            spec = getattr(func, _PROPERTY)
            self._impls.setdefault((spec.namespace, spec.name), {})[spec.source] = func

    def _implementations(self, namespace, name) -> dict:
        """:returns: ``{source: function}`` of property ``namespace.name``."""
        return self._impls[(namespace, name)]

    def _source_predicates(self) -> dict:
        """:returns: ``{source name: predicate}`` to dispatch on."""
        return self._predicates

    def names(self, namespace: str | None = None) -> list[str]:
        """:returns: the property and sub-namespace names directly under ``namespace``."""
        return self.index.names(namespace)

    def property_prefix(self, path: str) -> tuple | None:
        """:returns: ``(namespace, name)`` of the property a dotted path starts with, else None."""
        return self.index.property_prefix(path)

    def describe(self) -> list[dict]:
        """:returns: the ``/event_properties`` list: namespace, name, sources, doc, modules."""
        return self.index.describe()

    def is_empty(self) -> bool:
        """Whether no property is known."""
        return self.index.is_empty()

    def sources_of(self, event) -> list[str]:
        """:returns: the names of the sources whose predicate accepts ``event`` (asked once per
            :class:`~sandbox.events.Event`: every property of it dispatches on the same answer)."""
        cached = getattr(event, "_cached", None)
        if cached is not None:
            # keyed by how many predicates there are: a layer imported later may add some
            return cached((_SOURCES_KEY, len(self._source_predicates())), lambda: self._sources_of(event))
        return self._sources_of(event)

    def _sources_of(self, event) -> list[str]:
        found = []
        for name, predicate in self._source_predicates().items():
            try:
                if predicate(event):
                    found.append(name)
            except Exception:  # a predicate that cannot read this event simply does not match
                continue
        return found

    def compute(self, event, namespace: str | None, name: str):
        """Compute property ``namespace.name`` of ``event`` (dispatching on its source)."""
        impls = self._implementations(namespace, name)
        for source in self.sources_of(event):
            if source in impls:
                return impls[source](event)
        failures = []
        for func in impls.values():  # no source matched: each in turn, skipping those that cannot read it
            try:
                value = func(event)
            except Exception as err:
                failures.append(err)
                continue
            if value is not None:
                return value
        if failures and len(failures) == len(impls):
            raise failures[0]  # none could read this event: say why
        return None

    def unknown(self, namespace: str | None, name: str) -> AttributeError:
        """:returns: the error for an unknown ``namespace.name`` (listing the known names)."""
        where = f"namespace {namespace!r}" if namespace else "event"
        known = ", ".join(self.names(namespace)) or "none"
        return AttributeError(f"{where} has no property {name!r} (known: {known})")

    def resolve(self, event, name: str, namespace: str | None = None):
        """``evt.<namespace>.<name>``: a property's value or a deeper namespace.

        :raises AttributeError: unknown name; the message lists the known ones.
        """
        if self.index.has(namespace, name):
            return event._cached((namespace, name), lambda: self.compute(event, namespace, name))
        dotted = f"{namespace}.{name}" if namespace else name
        if self.index.is_namespace(dotted):
            return _Namespace(self, event, dotted)
        raise self.unknown(namespace, name)

    def value_at(self, event, path: str):
        """:returns: ``(True, value)`` for a property path like ``tincan.verb.id``, else ``(False, None)``.

        The longest prefix naming a property is computed; the rest is looked up
        inside its value (dicts).
        """
        key = self.index.property_prefix(path)
        if key is None:
            return False, None
        value = self.resolve(event, key[1], key[0])
        depth = len(key[0].split(".")) + 1 if key[0] else 1
        for part in path.split(".")[depth:]:
            value = value.get(part) if isinstance(value, dict) else None
        return True, value


def _manager(plugins) -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    for name, plugin in plugins:
        manager.register(plugin, name=name)
    return manager


def _registry(plugins) -> PropertyRegistry:
    """Gather every plugin's properties and sources through the hooks; collisions raise."""
    manager = _manager(plugins)
    properties = [(impl.plugin_name, func) for impl in manager.hook.insights_event_properties.get_hookimpls()
                  for func in impl.function() or []]
    sources = [(impl.plugin_name, func) for impl in manager.hook.insights_event_sources.get_hookimpls()
               for func in impl.function() or []]
    return PropertyRegistry(properties, sources)


def _package_plugins(entry_points: bool) -> list:
    if not entry_points:
        return []
    return [(f"package {name}", _ModulePlugin(module, name)) for name, module in _entry_point_modules()]


def build_registry(properties_files: dict | None = None, entry_points: bool = True) -> PropertyRegistry:
    """Build this process's registry through pluggy.

    :param properties_files: ``{module name: path of its properties.py}``.
    :param entry_points: also load plugins of the ``insights.properties`` entry-point group.
    :raises ModuleLoadError: a file failed to load, or two plugins collide (both named).
    """
    plugins = _package_plugins(entry_points)
    plugins += [(f"module {origin}", module_plugin(path, origin))
                for origin, path in sorted((properties_files or {}).items())]
    return _registry(plugins)


def properties_file(folder) -> Path | None:
    """:returns: a module folder's ``properties.py``, or None."""
    path = Path(folder) / "properties.py"
    return path if path.is_file() else None


def entry_point_names() -> list[str]:
    """:returns: the names registered under ``insights.properties`` (nothing is imported)."""
    from importlib.metadata import entry_points
    return sorted(entry.name for entry in entry_points(group=ENTRY_POINT_GROUP))


def entry_point_plugin(name: str) -> _ModulePlugin:
    """Import the package registered as ``name`` under ``insights.properties``, as a plugin.

    :raises ModuleLoadError: it is not installed or fails to load.
    """
    for found, module in _entry_point_modules(name):
        return _ModulePlugin(module, found)
    raise ModuleLoadError(f"no entry point {name!r} in {ENTRY_POINT_GROUP}")


def _entry_point_modules(only: str | None = None):
    """:returns: ``[(name, module)]`` of packages registered under ``insights.properties``."""
    from importlib.metadata import entry_points
    found = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if only is not None and entry.name != only:
            continue
        try:
            found.append((entry.name, entry.load()))
        except Exception as err:
            raise ModuleLoadError(f"entry point {entry.name!r} of {ENTRY_POINT_GROUP} failed to load: {err}") from err
    return found
