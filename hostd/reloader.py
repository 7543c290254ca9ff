"""Hot reload: module folders added, changed or removed while hostd runs.

A thread watches every modules dir with watchfiles and tells the host which
module folders changed; the host starts new ones, restarts changed ones (a
failed module becomes healthy as soon as its folder is fixed) and stops removed
ones, without touching the others.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import watchfiles

__all__ = ["Reloader", "changed_modules"]

log = logging.getLogger("insights.reloader")


def changed_modules(changes, bases) -> set[str]:
    """:returns: the names of the module folders (direct children of ``bases``) touched by ``changes``."""
    names = set()
    for _, changed in changes:
        path = Path(changed).resolve()
        for base in bases:
            try:
                relative = path.relative_to(base)
            except ValueError:
                continue
            if relative.parts:
                names.add(relative.parts[0])
    return names


class Reloader(threading.Thread):
    """Watches the modules dirs and calls ``on_change(names)`` with the module folders that changed.

    :param bases: the modules dirs.
    :param on_change: callable taking a set of folder names.
    :param debounce_ms: how long changes are gathered before one call.
    """

    def __init__(self, bases, on_change, debounce_ms: int = 300):
        super().__init__(name="insights-reloader", daemon=True)
        self._bases = [Path(b).resolve() for b in bases if Path(b).is_dir()]
        self._on_change = on_change
        self._debounce = debounce_ms
        self._stopping = threading.Event()

    def stop(self) -> None:
        """End the watch (within about a step)."""
        self._stopping.set()

    def run(self) -> None:
        if not self._bases:
            return
        try:
            for changes in watchfiles.watch(*self._bases, stop_event=self._stopping, debounce=self._debounce,
                                            step=50, recursive=True, raise_interrupt=False):
                names = changed_modules(changes, self._bases)
                if names:
                    log.info("module folders changed: %s", ", ".join(sorted(names)))
                    try:
                        self._on_change(names)
                    except Exception:
                        log.exception("reloading %s failed", ", ".join(sorted(names)))
        except Exception:
            log.exception("the module watcher stopped")
