"""Retention: deleting old event-log entries and old dead letters, every few minutes.

Three settings (``0``, the default, keeps everything):

* ``events.retention_days``: a log entry whose ``received`` time is older than
  that is deleted once *every* handler cursor is past it. Every cursor in the
  store counts: those of running modules, of modules stopped, failed or not
  loaded on this node (they resume where they were), and of modules removed
  for good (hostd cannot tell "removed" from "removed for now" or "runs on
  another node"; an admin releases them by deleting their cursor documents). On top
  of the stored cursors, the positions this node's delivery threads hold in
  memory count too (a rebuild moves those back before the store's).
* ``events.dead_letter_retention_days``: a dead letter parked longer ago than
  that is deleted (letters an admin marked for retry are left to the retry).
* ``events.retention_interval_s``: how often a pass runs.

Safe on several nodes sharing one store, all running it at once: the limit is
the lowest cursor read just before each delete (with several appenders a
``seq`` at or below every cursor has been acknowledged by every handler, so
nothing a handler still needs is at or below it), deletes are by range and age
(idempotent: a second node deleting the same range finds nothing), and nothing
else is written. Deletion goes in chunks of :data:`CHUNK` positions so one pass
over a large backlog never holds the store for long.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

__all__ = ["RetentionSettings", "Retention", "CHUNK"]

log = logging.getLogger("insights.retention")

DAY_S = 86400.0
#: log positions deleted per ``delete_many``
CHUNK = 50_000


@dataclass(frozen=True)
class RetentionSettings:
    """How long things are kept, in days (0: forever), and how often a pass runs."""

    events_days: float = 0.0
    dead_letter_days: float = 0.0
    interval_s: float = 300.0

    @classmethod
    def from_config(cls, config) -> "RetentionSettings":
        """:returns: the settings of a :class:`~hostd.config.Config`."""
        return cls(config["events.retention_days"], config["events.dead_letter_retention_days"],
                   config["events.retention_interval_s"])

    @property
    def enabled(self) -> bool:
        """Whether a pass has anything to do."""
        return self.events_days > 0 or self.dead_letter_days > 0


class Retention:
    """One retention pass at a time (:meth:`run_once`), and the totals of this process's passes.

    :param eventlog: the :class:`~hostd.eventlog.EventLog`.
    :param cursors: the handlers' :class:`~hostd.eventlog.Cursors`.
    :param dead_letters: the :class:`~hostd.deadletters.DeadLetters`.
    :param settings: :class:`RetentionSettings`.
    :param local_positions: ``() -> iterable of int``: positions this node's delivery
        threads hold in memory (a handler being rebuilt is behind its stored cursor).
    """

    def __init__(self, eventlog, cursors, dead_letters, settings: RetentionSettings, local_positions=tuple):
        self._log = eventlog
        self._cursors = cursors
        self._dead_letters = dead_letters
        self.settings = settings
        self._local_positions = local_positions
        self._lock = threading.Lock()
        self._totals = {"events": 0, "dead_letters": 0, "runs": 0, "last_run": 0.0, "held_back_by": None,
                        "lowest_cursor": None}

    def stats(self) -> dict:
        """:returns: this process's totals: ``events`` and ``dead_letters`` deleted, ``runs``,
            ``last_run`` (epoch seconds, 0 before the first), ``lowest_cursor`` and
            ``held_back_by`` (``"module/handler"`` whose cursor kept expired events, or None)."""
        with self._lock:
            return {**self._totals, **{k: v for k, v in vars(self.settings).items()}}

    def _limit(self) -> tuple[int | None, str | None]:
        """:returns: the highest ``seq`` every handler has passed (None: no handler at all), and
            which handler that is, read now."""
        lowest = self._cursors.lowest()
        seq, holder = (lowest[0], f"{lowest[1]}/{lowest[2]}") if lowest else (None, None)
        for position in self._local_positions():
            position = position or 0
            if seq is None or position < seq:
                seq, holder = position, "(a handler rewound on this node)"
        return seq, holder

    def expire_events(self, now: float | None = None) -> int:
        """Delete the log entries older than ``events.retention_days`` that every cursor passed.

        :param now: the time ages are counted from (default: now).
        :returns: how many this call deleted.
        """
        if self.settings.events_days <= 0:
            return 0
        cutoff = (time.time() if now is None else now) - self.settings.events_days * DAY_S
        events, deleted, limit, holder = self._log.events, 0, None, None
        while True:
            first = events.find_one({}, {"seq": 1, "received": 1, "_id": 0}, sort=[("seq", 1)])
            if first is None or first["received"] >= cutoff:
                break
            limit, holder = self._limit()  # read at the time of each delete
            if limit is not None and first["seq"] > limit:
                break
            upper = first["seq"] + CHUNK - 1 if limit is None else min(limit, first["seq"] + CHUNK - 1)
            deleted += events.delete_many({"seq": {"$gte": first["seq"], "$lte": upper},
                                           "received": {"$lt": cutoff}}).deleted_count
        if deleted:
            kept = events.find_one({}, {"seq": 1, "_id": 0}, sort=[("seq", 1)])
            self._log.forget_below(kept["seq"] if kept is not None else self._log.head() + 1)
        held = holder if first is not None and first["received"] < cutoff else None
        with self._lock:
            self._totals["events"] += deleted
            self._totals["held_back_by"], self._totals["lowest_cursor"] = held, limit
        if deleted:
            log.info("retention: deleted %d log entries older than %g days", deleted, self.settings.events_days)
        if held:
            log.info("retention: log entries older than %g days are kept from seq %d on: handler %s has not"
                     " passed them", self.settings.events_days, first["seq"], held)
        return deleted

    def expire_dead_letters(self, now: float | None = None) -> int:
        """Delete the dead letters parked longer than ``events.dead_letter_retention_days`` ago.

        :returns: how many this call deleted.
        """
        if self.settings.dead_letter_days <= 0:
            return 0
        cutoff = (time.time() if now is None else now) - self.settings.dead_letter_days * DAY_S
        deleted = self._dead_letters.expire(cutoff)
        with self._lock:
            self._totals["dead_letters"] += deleted
        if deleted:
            log.info("retention: deleted %d dead letters older than %g days", deleted,
                     self.settings.dead_letter_days)
        return deleted

    def run_once(self, now: float | None = None) -> dict:
        """One pass: expire log entries, then dead letters.

        :returns: ``{"events": deleted, "dead_letters": deleted}``.
        """
        done = {"events": self.expire_events(now), "dead_letters": self.expire_dead_letters(now)}
        with self._lock:
            self._totals["runs"] += 1
            self._totals["last_run"] = time.time()
        return done
