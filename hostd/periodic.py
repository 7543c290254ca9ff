"""A background thread that runs one job at start and then every so often, until stopped."""
from __future__ import annotations

import logging
import threading

__all__ = ["PeriodicTask"]

log = logging.getLogger("insights.periodic")


class PeriodicTask(threading.Thread):
    """Runs ``job()`` at start and then every ``interval_s`` seconds, until :meth:`stop`.

    A job that raises (the store is down, say) is logged and tried again next time.

    :param name: the thread's name.
    :param job: what to run.
    :param interval_s: seconds between two runs.
    :param what: what the job does, for the log (``"sweeping expired files"``).
    """

    def __init__(self, name: str, job, interval_s: float, what: str):
        super().__init__(name=name, daemon=True)
        self._job = job
        self._interval_s = interval_s
        self._what = what
        self._stopping = threading.Event()
        #: runs completed so far (failed ones included)
        self.runs = 0

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._job()
            except Exception:
                log.warning("%s failed", self._what, exc_info=True)
            self.runs += 1
            self._stopping.wait(self._interval_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the run in hand and wait for it to end."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout_s)
