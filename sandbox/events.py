"""The ``Event`` objects event handlers receive."""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["Event"]


class Event(Mapping):
    """An immutable event: ``evt["key"]``, ``"key" in evt``, ``evt.keys()``, ``evt.event``.

    :param raw: the event as it was logged (a dict).
    :param meta: what the log knows about it: ``seq``, ``id``, ``source``, ``received``.
    :param properties: resolves derived properties by attribute (``evt.tincan.actor``);
        ``None`` when no property is known.
    """

    __slots__ = ("_raw", "_meta", "_properties", "_cache")

    def __init__(self, raw: dict, meta: dict | None = None, properties=None):
        object.__setattr__(self, "_raw", MappingProxyType(dict(raw)))
        object.__setattr__(self, "_meta", MappingProxyType(dict(meta or {})))
        object.__setattr__(self, "_properties", properties)
        object.__setattr__(self, "_cache", {})

    def _cached(self, key, compute):
        """A property's value, computed once per event (events are immutable)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    @property
    def event(self) -> Mapping:
        """The raw event (read-only)."""
        return self._raw

    @property
    def meta(self) -> Mapping:
        """Log metadata: ``seq``, ``id`` (identity), ``source``, ``received``."""
        return self._meta

    def __getitem__(self, key):
        return self._raw[key]

    def __iter__(self):
        return iter(self._raw)

    def __len__(self):
        return len(self._raw)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if self._properties is None or self._properties.is_empty():
            raise AttributeError(f"event has no property {name!r}; no event properties are loaded")
        return self._properties.resolve(self, name)

    def __dir__(self):
        names = ["event", "meta", "keys", "items", "values", "get"]
        return names + (self._properties.names() if self._properties is not None else [])

    def __setattr__(self, name, value):
        raise AttributeError("Event objects are immutable")

    def __repr__(self):
        return f"Event({dict(self._raw)!r})"
