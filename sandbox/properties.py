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
           "build_registry", "load_registry", "properties_file", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "insights.properties"
_loads = itertools.count(1)
_PROPERTY = "__insights_property__"
_SOURCE = "__insights_source__"


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


class PropertyRegistry:
    """Every property and source known to one process.

    :param properties: ``[(origin, function)]`` of ``@event_property`` functions.
    :param sources: ``[(origin, function)]`` of ``@event_source`` predicates.
    :raises ModuleLoadError: two origins claim the same (namespace, name, source) or source name.
    """

    def __init__(self, properties=(), sources=()):
        self._impls: dict = {}     # (namespace, name) -> {source: function}
        self._origins: dict = {}   # (namespace, name, source) -> origin
        self._sources: dict = {}   # source name -> (origin, predicate)
        self._namespaces: set = set()
        for origin, predicate in sources:
            name = getattr(predicate, _SOURCE)
            if name in self._sources and self._sources[name][1] is not predicate:
                raise ModuleLoadError(f"event source {name!r} is declared by both {self._sources[name][0]}"
                                      f" and {origin}")
            self._sources[name] = (origin, predicate)
        for origin, func in properties:
            spec = getattr(func, _PROPERTY)
            key = (spec.namespace, spec.name, spec.source)
            if key in self._origins and self._impls[key[:2]][spec.source] is not func:
                raise ModuleLoadError(f"event property {self._label(*key)} is defined by both"
                                      f" {self._origins[key]} and {origin}")
            self._origins[key] = origin
            self._impls.setdefault(key[:2], {})[spec.source] = func
            parts = (spec.namespace or "").split(".")
            for depth in range(1, len(parts) + 1) if spec.namespace else ():
                self._namespaces.add(".".join(parts[:depth]))

    @staticmethod
    def _label(namespace, name, source=None) -> str:
        dotted = f"{namespace}.{name}" if namespace else name
        return f"{dotted!r} (source {source!r})" if source else repr(dotted)

    def names(self, namespace: str | None = None) -> list[str]:
        """:returns: the property and sub-namespace names directly under ``namespace``."""
        prefix = f"{namespace}." if namespace else ""
        names = {name for (ns, name) in self._impls if ns == namespace}
        names |= {n[len(prefix):].split(".")[0] for n in self._namespaces
                  if n.startswith(prefix) and n != namespace}
        return sorted(names)

    def sources_of(self, event) -> list[str]:
        """:returns: the names of the sources whose predicate accepts ``event``."""
        found = []
        for name, (_, predicate) in self._sources.items():
            try:
                if predicate(event):
                    found.append(name)
            except Exception:  # a predicate that cannot read this event simply does not match
                continue
        return found

    def compute(self, event, namespace: str | None, name: str):
        """Compute property ``namespace.name`` of ``event`` (dispatching on its source)."""
        impls = self._impls[(namespace, name)]
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

    def resolve(self, event, name: str, namespace: str | None = None):
        """``evt.<namespace>.<name>``: a property's value or a deeper namespace.

        :raises AttributeError: unknown name; the message lists the known ones.
        """
        if (namespace, name) in self._impls:
            return event._cached((namespace, name), lambda: self.compute(event, namespace, name))
        dotted = f"{namespace}.{name}" if namespace else name
        if dotted in self._namespaces:
            return _Namespace(self, event, dotted)
        where = f"namespace {namespace!r}" if namespace else "event"
        known = ", ".join(self.names(namespace)) or "none"
        raise AttributeError(f"{where} has no property {name!r} (known: {known})")

    def property_prefix(self, path: str) -> tuple | None:
        """:returns: ``(namespace, name)`` of the property a dotted path starts with, else None."""
        parts = path.split(".")
        for cut in range(len(parts), 0, -1):
            key = (".".join(parts[:cut - 1]) or None, parts[cut - 1])
            if key in self._impls:
                return key
        return None

    def value_at(self, event, path: str):
        """:returns: ``(True, value)`` for a property path like ``tincan.verb.id``, else ``(False, None)``.

        The longest prefix naming a property is computed; the rest is looked up
        inside its value (dicts).
        """
        parts = path.split(".")
        for cut in range(len(parts), 0, -1):
            namespace = ".".join(parts[:cut - 1]) or None
            if (namespace, parts[cut - 1]) in self._impls:
                value = self.resolve(event, parts[cut - 1], namespace)
                for part in parts[cut:]:
                    value = value.get(part) if isinstance(value, dict) else None
                return True, value
        return False, None

    def describe(self) -> list[dict]:
        """:returns: the ``/event_properties`` list: namespace, name, sources, doc."""
        out = []
        for (namespace, name), impls in sorted(self._impls.items(), key=lambda i: (i[0][0] or "", i[0][1])):
            docs = [(f.__doc__ or "").strip() for f in impls.values() if f.__doc__]
            out.append({"namespace": namespace, "name": name,
                        "sources": sorted(s for s in impls if s is not None) + (["*"] if None in impls else []),
                        "doc": docs[0].split("\n\n")[0] if docs else "",
                        "modules": sorted({self._origins[(namespace, name, s)] for s in impls})})
        return out

    def is_empty(self) -> bool:
        """Whether no property is known."""
        return not self._impls


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


def load_registry(properties_files: dict, entry_points: bool = True, first=()) -> tuple[PropertyRegistry, dict]:
    """Build a registry, leaving out each module whose properties fail to load or collide.

    Claims are first come, first served: installed packages, then the modules in
    ``first`` (those already serving, on a reload), then the others by name. A
    module that claims what an earlier one holds is left out, the error naming both.

    :param properties_files: ``{module name: path of its properties.py}``.
    :param first: module names whose claims come before the others'.
    :returns: ``(registry, {module name: error})``; modules in the second are left out.
    """
    accepted, errors = _package_plugins(entry_points), {}
    _registry(accepted)  # packages colliding among themselves: a configuration error, raised
    order = [n for n in first if n in properties_files] + sorted(n for n in properties_files if n not in first)
    for origin in order:
        try:
            candidate = (f"module {origin}", module_plugin(properties_files[origin], origin))
            _registry(accepted + [candidate])
        except ModuleLoadError as err:
            errors[origin] = str(err)
            continue
        accepted.append(candidate)
    return _registry(accepted), errors


def properties_file(folder) -> Path | None:
    """:returns: a module folder's ``properties.py``, or None."""
    path = Path(folder) / "properties.py"
    return path if path.is_file() else None


def _entry_point_modules():
    """:returns: ``[(name, module)]`` of packages registered under ``insights.properties``."""
    from importlib.metadata import entry_points
    found = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found.append((entry.name, entry.load()))
        except Exception as err:
            raise ModuleLoadError(f"entry point {entry.name!r} of {ENTRY_POINT_GROUP} failed to load: {err}") from err
    return found
