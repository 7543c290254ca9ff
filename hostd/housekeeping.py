"""The host's periodic clean-ups, started and stopped together.

Two background threads (:class:`~hostd.periodic.PeriodicTask`) keep what hostd
stores from growing without end: the file sweeper runs the
:class:`~hostd.fs_sweeper.ExpirySweeper`, which deletes modules' expired files,
and the retention thread (only when a retention setting asks for it) runs
:class:`~hostd.retention.Retention`, which deletes log entries every handler
passed and old dead letters.
"""
from __future__ import annotations

from .fs_sweeper import ExpirySweeper
from .periodic import PeriodicTask
from .retention import Retention, RetentionSettings

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
        sweeper = ExpirySweeper(config["storage.fs"], modules_dir, storage.client)
        self._threads = [PeriodicTask("insights-fs-sweeper", sweeper.sweep_once, config["storage.fs_sweep_s"],
                                      "sweeping expired files")]
        if self.retention.settings.enabled:
            self._threads.append(PeriodicTask("insights-retention", self.retention.run_once,
                                              self.retention.settings.interval_s, "a retention pass"))

    def start(self) -> None:
        """Start the threads."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop the threads and wait for them."""
        for thread in self._threads:
            thread.stop()
