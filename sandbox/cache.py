"""A module's cache (``cache``): values kept in the sandbox's memory with a timeout."""
from __future__ import annotations

import threading
import time

__all__ = ["Cache"]

_MISSING = object()


class Cache:
    """``get(key, default=None)``, ``set(key, value, timeout)``, ``delete(key)``.

    Values live in the sandbox process and are lost when it restarts.
    """

    def __init__(self, clock=time.monotonic):
        self._items: dict = {}
        self._lock = threading.Lock()
        self._clock = clock

    def get(self, key, default=None):
        """:returns: the value stored under ``key`` if not expired, else ``default``."""
        with self._lock:
            value, until = self._items.get(key, (_MISSING, 0.0))
            if value is _MISSING:
                return default
            if until is not None and until <= self._clock():
                del self._items[key]
                return default
            return value

    def set(self, key, value, timeout: float | None = 300) -> None:
        """Store ``value`` for ``timeout`` seconds (``None``: until the sandbox restarts)."""
        with self._lock:
            self._items[key] = (value, None if timeout is None else self._clock() + timeout)

    def delete(self, key) -> None:
        """Forget ``key`` (missing is fine)."""
        with self._lock:
            self._items.pop(key, None)
