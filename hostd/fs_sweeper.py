"""Deleting modules' expired files (``fs.expire``) for real, whether modules look at them or not.

A module's store drops an expired file when it is touched (open, exists, listdir);
the sweeper deletes the others, every ``storage.fs_sweep_s`` seconds, for every
module of the backend: the folders under the data dir, or every module database
of the store (so on several nodes sharing one MongoDB, whichever sweeps first
deletes; the others find nothing left). It also deletes what writers that died
before closing their file left behind.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from .module_files import ModuleFiles

__all__ = ["ExpirySweeper"]

log = logging.getLogger("insights.fs_sweeper")

#: Staging files older than this were left by a writer that died: a day.
STALE_STAGING_S = 24 * 3600.0


class ExpirySweeper:
    """Deletes the expired files of every module, once per :meth:`sweep_once`.

    :param backend: ``"local"`` or ``"gridfs"`` (``storage.fs``).
    :param modules_dir: ``<data_dir>/modules``, holding ``<module>/fs`` (local backend).
    :param client: a ``pymongo`` client of the store (gridfs backend).
    """

    def __init__(self, backend: str, modules_dir: str | Path, client=None):
        self._files = ModuleFiles(backend, modules_dir, client)

    def sweep_once(self, now: float | None = None) -> dict[str, int]:
        """Delete every file whose expiry time is ``now`` or earlier.

        A module whose files cannot be swept is logged and skipped; the others are swept.

        :param now: the time to compare with (default: now).
        :returns: ``{module: files deleted}`` for every module swept.
        """
        now = time.time() if now is None else now
        deleted = {}
        for module in self._files.modules():
            try:
                store = self._files.store(module)
                deleted[module] = store.purge_expired(now)
                store.remove_stale_staging(STALE_STAGING_S, now)
            except Exception:
                log.warning("could not sweep the files of module %r", module, exc_info=True)
        if any(deleted.values()):
            log.info("deleted %d expired files", sum(deleted.values()))
        return deleted
