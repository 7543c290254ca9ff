"""Hot reload: module folders added, changed or removed while hostd runs.

A thread watches every modules dir with watchfiles and tells the host which
module folders changed; the host starts new ones, restarts changed ones (a
failed module becomes healthy as soon as its folder is fixed) and stops removed
ones, without touching the others.

A module folder may be a symlink to a folder elsewhere. The watch follows the
symlinks present when it starts, so it starts again whenever the set of
symlinked folders changes: files edited in a linked folder are seen too.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import watchfiles

from sandbox.loader import MODULE_NAME

__all__ = ["Reloader", "changed_modules"]

log = logging.getLogger("insights.reloader")


def changed_modules(changes, bases) -> set[str]:
    """Map file changes to module folder names.

    A path is not resolved: a module folder that is a symlink is named by the
    link, which is what sits in the modules dir.

    :param changes: ``(change, path)`` pairs as watchfiles yields them.
    :param bases: the (resolved) modules dirs.
    :returns: the names of the module folders (direct children of ``bases``, with a
        valid module name) touched by ``changes``.
    """
    names = set()
    for _, changed in changes:
        path = Path(os.path.abspath(changed))
        for base in bases:
            try:
                relative = path.relative_to(base)
            except ValueError:
                continue
            if relative.parts and MODULE_NAME.match(relative.parts[0]):
                names.add(relative.parts[0])
    return names


def linked_folders(bases) -> set[tuple[Path, Path]]:
    """:returns: ``(link, target)`` of every child of ``bases`` that is a symlink to a folder."""
    links = set()
    for base in bases:
        try:
            children = list(base.iterdir())
        except OSError:
            continue
        links.update((child, child.resolve()) for child in children if child.is_symlink() and child.is_dir())
    return links


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
            while not self._stopping.is_set():
                self._watch()
        except Exception:
            log.exception("the module watcher stopped")

    def _watch(self) -> None:
        """Watch until stopped or until a symlinked module folder comes, goes or changes target."""
        links = linked_folders(self._bases)
        for changes in watchfiles.watch(*self._bases, stop_event=self._stopping, debounce=self._debounce,
                                        step=50, recursive=True, raise_interrupt=False):
            names = changed_modules(changes, self._bases)
            if names:
                log.info("module folders changed: %s", ", ".join(sorted(names)))
                try:
                    self._on_change(names)
                except Exception:
                    log.exception("reloading %s failed", ", ".join(sorted(names)))
            if linked_folders(self._bases) != links:
                return  # watch again: the new watch follows the current symlinks
