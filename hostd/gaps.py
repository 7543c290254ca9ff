"""Reading the event log without skipping an event that is still being written.

Several appenders (every hostd node ingests) reserve ``seq`` ranges from one
counter and insert them independently, so a reader can see seq 12 before seq 11
is written. A consumer that moved its cursor past 11 would never see it. The
:class:`GapWatch` hands a consumer only the gap-free start of a page: a seq
missing below one already visible is waited for, and skipped only when

* the appender that reserved it declared it void (its event was a duplicate:
  :meth:`~hostd.eventlog.EventLog.voids_between`), or
* it has been missing for ``grace_s`` since this watch first saw it missing
  (its writer died between reserving and writing; the skip is logged).

The grace is measured from when the gap was first seen, per gap: every seq of
a gap ``[first, next visible - 1]`` was already missing when ``first`` was first
seen missing (nothing is ever deleted below a visible seq but by retention), so
one timestamp per gap start is enough.
"""
from __future__ import annotations

import logging
import threading
import time

__all__ = ["GapWatch"]

log = logging.getLogger("insights.gaps")
_MAX_TRACKED = 10_000


class GapWatch:
    """The gaps one process has seen in the log, and since when.

    :param grace_s: how long a missing seq is waited for before it is skipped.
    :param voids_between: ``voids_between(first, last) -> [(first, last), ...]``: ranges
        declared void by their appender (asked only when a gap is found).
    :param clock: a monotonic clock.
    """

    def __init__(self, grace_s: float, voids_between=None, clock=time.monotonic):
        self.grace_s = grace_s
        self._voids_between = voids_between
        self._clock = clock
        self._first_seen: dict[int, list] = {}  # gap start -> [first seen, skipped]
        self._lock = threading.Lock()
        #: seqs skipped after the grace period (their events, if ever written, were not delivered)
        self.skipped = 0

    def contiguous(self, after: int, docs: list[dict]) -> list[dict]:
        """:returns: the start of ``docs`` (log documents after ``after``, in order) that has no
            gap still worth waiting for."""
        expected = after + 1
        for index, doc in enumerate(docs):
            seq = doc["seq"]
            if seq > expected and not self._passable(expected, seq - 1):
                return docs[:index]
            expected = seq + 1
        return docs

    def _passable(self, first: int, last: int) -> bool:
        """Whether the missing seqs ``first..last`` may be stepped over now."""
        if self._voids_between is not None and _covered(first, last, self._voids_between(first, last)):
            return True
        now = self._clock()
        with self._lock:
            if len(self._first_seen) > _MAX_TRACKED:  # forget the oldest half: they only wait again
                for key in sorted(self._first_seen, key=lambda k: self._first_seen[k][0])[:_MAX_TRACKED // 2]:
                    del self._first_seen[key]
            entry = self._first_seen.setdefault(first, [now, False])
            if now - entry[0] < self.grace_s:
                return False
            if not entry[1]:  # other consumers step over it too, without waiting again
                entry[1] = True
                self.skipped += last - first + 1
                log.warning("event log: seq %d..%d missing for %.1f s (an appender died before writing"
                            " them?); skipped", first, last, now - entry[0])
        return True


def _covered(first: int, last: int, ranges) -> bool:
    """Whether the union of ``ranges`` covers every seq of ``first..last``."""
    position = first
    for low, high in sorted(ranges):
        if low > position:
            return False
        position = max(position, high + 1)
        if position > last:
            return True
    return position > last
