"""The host's periodic clean-ups, started and stopped together.

Two background threads keep what hostd stores from growing without end: the
:class:`~hostd.fs_sweeper.FileSweeper` deletes modules' expired files, and the
:class:`~hostd.retention.RetentionThread` (only when a retention setting asks for
it) deletes log entries every handler passed and old dead letters.
"""
from __future__ import annotations

from .fs_sweeper import ExpirySweeper, FileSweeper
from .retention import Retention, RetentionSettings, RetentionThread

__all__ = ["Housekeeping"]


class Housekeeping:
    """The file sweeper and the retention thread of one host.

    :param config: the host's config (``storage.fs*``, ``events.*retention*``).
    :param modules_dir: where modules' local files live (``<data dir>/modules``).
    :param storage: the host's :class:`~hostd.storage.HostStorage` (opened).
    :param positions: ``() -> [seq, ...]``: the handler positions this node holds in memory
        (a rewound handler is behind its stored cursor).
    """

    def __init__(self, config, modules_dir, storage, positions):
        #: what retention deleted and what holds it back (``/metrics``)
        self.retention = Retention(storage.eventlog, storage.cursors, storage.dead_letters,
                                   RetentionSettings.from_config(config), positions)
        self._threads = [FileSweeper(ExpirySweeper(config["storage.fs"], modules_dir, storage.client),
                                     config["storage.fs_sweep_s"])]
        if self.retention.settings.enabled:
            self._threads.append(RetentionThread(self.retention))

    def start(self) -> None:
        """Start the threads."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop the threads and wait for them."""
        for thread in self._threads:
            if thread.is_alive():
                thread.stop()
                thread.join(10)
