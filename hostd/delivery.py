"""Delivering logged events to event handlers, in log order, at least once.

A :class:`Delivery` thread walks the handlers of the modes it serves (routes of
the :class:`~hostd.handlers.HandlerTable`). For each it reads the log after the
handler's cursor, keeps the events the route's compiled filter matches (so
others never cross to the sandbox), calls the handler with them, waits for its
acknowledgement, and only then moves the cursor. A failing batch is
retried one event at a time with backoff, so one poison event cannot hold back
the rest: after ``limits.max_retries`` failures that event goes to the module's
dead letters and the handler moves on.

The host runs two: one for ``queued`` and ``batch`` handlers, and one for
``realtime`` handlers, woken by every append; the realtime one reports each
move to the ingest thread, where ``POST /event`` requests wait for them.
``batch`` handlers are called when ``every`` seconds have passed since their
last run, with everything that arrived since.

With a :class:`~hostd.cluster.Cluster` (``hostd serve`` always has one), a
thread feeds a consumer only while this node holds its lease, re-reads its
cursor each time it (re)gains the lease, splits partitioned handlers into their
consumers, and reads the log through the cluster's gap watch, so that a seq
another appender reserved but did not write yet is waited for, not skipped.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

from dataclasses import dataclass

from sandbox.errors import InsightsError

from .calls import SandboxClient

__all__ = ["Delivery", "DeliverySettings", "HandlerState"]

log = logging.getLogger("insights.delivery")
_BATCH_MODE_MAX_EVENTS = 50_000
_SKIPPED_KEPT = 65_536  # enough for every realtime request still waiting


@dataclass(frozen=True)
class DeliverySettings:
    """The settings delivery runs by."""

    batch_size: int = 2000
    poll_interval_s: float = 0.05
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0

    @classmethod
    def from_config(cls, config) -> "DeliverySettings":
        """:returns: the settings of a :class:`~hostd.config.Config`."""
        return cls(config["events.batch_size"], config["events.poll_interval_s"],
                   config["supervisor.backoff_initial_s"], config["supervisor.backoff_max_s"])


def _skipped(result) -> list:
    """:returns: the ``seq`` of the events a handler's sandbox acknowledged without calling it."""
    skipped = result.get("skipped") if isinstance(result, dict) else None
    return [s for s in skipped if isinstance(s, int)] if isinstance(skipped, list) else []


class HandlerState:
    """What delivery knows about one handler (also shown in ``/modules``).

    :param route: the handler's :class:`~hostd.handlers.HandlerRoute`.
    """

    def __init__(self, route):
        self.route = route
        self.module = route.module
        self.name = route.name   # the consumer: the handler, or one partition of it (handler#k)
        self.endpoint = getattr(route, "endpoint", route.name)   # the handler called in the sandbox
        self.epoch: int | None = None   # the lease epoch the position was read under
        self.read_at = 0.0   # when the position was last read from the store
        self.options = route.options
        self.mode = route.mode
        self.matches = route.matches
        self.position: int | None = None
        self.handled = 0
        #: recent events its sandbox acknowledged without calling it (property clauses rejected them)
        self.skipped: OrderedDict = OrderedDict()
        self.failures = 0
        self.isolate_until = 0   # after a failed batch: one event at a time up to this seq
        self.retry_at = 0.0
        self.last_run = time.time()
        self.last_error: str | None = None

    def remember_skipped(self, seqs) -> None:
        """Note events the sandbox acknowledged unhandled (the most recent ones are kept)."""
        for seq in seqs:
            self.skipped[seq] = None
        while len(self.skipped) > _SKIPPED_KEPT:
            self.skipped.popitem(last=False)

    def due(self, now: float) -> bool:
        """Whether the handler may be called now (backoff, batch period)."""
        if self.retry_at > now:
            return False
        if self.mode == "batch" and not self.failures:
            return now - self.last_run >= (self.options.get("every") or 0)
        return True

    def stats(self, head: int) -> dict:
        """:returns: this handler's ``/modules`` detail."""
        return {"mode": self.mode, "position": self.position,
                "lag": max(0, head - (self.position or 0)), "handled": self.handled,
                "failures": self.failures, "last_error": self.last_error}


class Delivery(threading.Thread):
    """A delivery thread for some handler modes.

    :param handlers: the host's :class:`~hostd.handlers.HandlerTable`.
    :param record_of: ``record_of(module) -> record | None``: a module's current table record.
    :param eventlog: the :class:`~hostd.eventlog.EventLog`.
    :param cursors: the handlers' :class:`~hostd.eventlog.Cursors`.
    :param dead_letters: the :class:`~hostd.deadletters.DeadLetters`.
    :param contexts: the host's :class:`~sandbox.transport.Contexts`.
    :param settings: :class:`DeliverySettings`.
    :param modes: the handler modes this thread serves.
    :param on_progress: called (from this thread) after a handler's cursor moved.
    :param cluster: the node's :class:`~hostd.cluster.Cluster` (leases, partitions, gaps), or None:
        every handler fed here, unsplit, reading the log as it is.
    """

    def __init__(self, handlers, record_of, eventlog, cursors, dead_letters, contexts,
                 settings: DeliverySettings = DeliverySettings(), modes=("queued", "batch"), on_progress=None,
                 cluster=None):
        super().__init__(name=f"insights-delivery-{'-'.join(modes)}", daemon=True)
        self._handlers = handlers
        self._record_of = record_of
        self._log = eventlog
        self._cursors = cursors
        self._dead_letters = dead_letters
        self._contexts = contexts
        self._settings = settings
        self.modes = frozenset(modes)
        self._on_progress = on_progress
        self._cluster = cluster
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._states: dict = {}
        self._lock = threading.Condition()
        self._round_lock = threading.Lock()   # held for each round: pause() waits for the one in hand
        self._pages: dict = {}
        #: the highest log position this thread knows of
        self.head = 0

    def stop(self) -> None:
        """End the loop after the call in hand."""
        self._stopping.set()
        self._wake.set()

    def notify(self, seq: int) -> None:
        """New events up to ``seq`` are in the log (or, with 0, dead letters are due)."""
        self.head = max(self.head, seq)
        self._wake.set()

    def states(self, module: str) -> list[HandlerState]:
        """:returns: the handler states of ``module`` known to this thread."""
        return [s for (m, _), s in list(self._states.items()) if m == module]

    def handled_any(self, module: str, handler: str, seqs) -> bool:
        """Whether the handler was called with one of the events ``seqs`` (rather than its sandbox
        acknowledging them all unhandled). Meant for events it is already past."""
        state = self._states.get((module, handler))
        if state is None or getattr(state.route, "exact", True):
            return True
        return any(seq not in state.skipped for seq in seqs)

    def position(self, module: str, handler: str) -> int | None:
        """:returns: the handler's acknowledged position (None if not seen yet); of a partitioned
            handler, that of its slowest partition."""
        state = self._states.get((module, handler))
        if state is not None:
            return state.position
        parts = [s.position for s in list(self._states.values()) if s.module == module and s.endpoint == handler]
        return min(parts) if parts and None not in parts else None

    def _routes(self, module: str | None = None) -> list:
        routes = self._handlers.routes(self.modes, module)
        return routes if self._cluster is None else self._cluster.consumers(routes)

    def paused(self):
        """:returns: a context manager during which this thread calls no handler (it waits for
            the round in hand to end first)."""
        return self._round_lock

    def rewind(self, module: str, handlers, position: int = 0) -> None:
        """Move handlers back to log ``position`` (call it while :meth:`paused`)."""
        with self._lock:
            for state in [s for s in self._states.values() if s.module == module
                          and (s.name in handlers or s.endpoint in handlers)]:  # partitions too
                state.position, state.failures, state.retry_at, state.isolate_until = position, 0, 0.0, 0
                if position == 0:
                    state.handled = 0
        self._wake.set()

    def wait_delivered(self, module: str, seq: int, timeout_s: float) -> bool:
        """Block until every running handler of ``module`` served here is past ``seq``."""
        deadline = time.time() + timeout_s
        with self._lock:
            while True:
                routes = self._routes(module)
                if all((self.position(module, r.name) or 0) >= seq for r in routes):
                    return True
                remaining = deadline - time.time()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.1))

    def run(self) -> None:
        client = SandboxClient(self._contexts, self._record_of)
        self.head = self._log.head()
        refreshed = time.time()
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                self._pages = {}  # log pages read this round, shared by handlers at one position
                if time.time() - refreshed > 0.25:  # appends we were not told about (other nodes)
                    self.head, refreshed = max(self.head, self._log.head()), time.time()
                try:
                    with self._round_lock:
                        worked = self._round(client)
                except Exception:  # the store or a sandbox hiccuped: retry on the next round
                    log.exception("delivery round failed")
                    worked = False
                if not worked:
                    self._wake.wait(self._settings.poll_interval_s)
        finally:
            client.close()

    def _state(self, route) -> HandlerState:
        state = self._states.get(route.key)
        if state is not None and state.options == route.options:
            if state.route is not route:  # the module restarted, or properties changed: same handler
                state.route, state.matches = route, route.matches
            return state  # failures and backoff carry over a restart of the sandbox
        state = HandlerState(route)
        state.position = self._cursors.get(route.module, route.name)
        if state.position is None:  # a handler seen for the first time
            state.position = 0 if state.options.get("backfill", True) else self._log.head()
            self._cursors.set(route.module, route.name, state.position)
        self._states[route.key] = state
        return state

    def _page(self, position: int, size: int) -> list[dict]:
        """Read the log after ``position`` once per round, whoever asks (up to a gap still
        waited for)."""
        key = (position, size)
        if key not in self._pages:
            docs = self._log.read_after(position, size)
            self._pages[key] = docs if self._cluster is None else self._cluster.contiguous(position, docs)
        return self._pages[key]

    def _claimed(self, state: HandlerState) -> bool:
        """Whether this node may feed the consumer now; on (re)gaining its lease, its position is
        read again (another node may have moved it)."""
        if self._cluster is None:
            return True
        epoch = self._cluster.claim(state.module, state.name)
        now = time.time()
        if (epoch is not None and epoch != state.epoch) or (epoch is None and now - state.read_at > 2.0):
            # held elsewhere: the position is read now and then, for /modules and waits
            stored = self._cursors.get(state.module, state.name)
            with self._lock:
                if stored is not None:
                    state.position = stored
                state.epoch, state.read_at = epoch, now
                self._lock.notify_all()
        return epoch is not None

    def _read(self, state: HandlerState) -> list[dict]:
        if state.position >= self.head:
            return []  # nothing new: no round trip to the store
        if state.failures or state.position < state.isolate_until:
            return self._page(state.position, 1)
        size = self._settings.batch_size
        docs = self._page(state.position, size)
        if state.mode == "batch":  # everything since the last run, page by page
            docs = list(docs)
            while len(docs) % size == 0 and docs and len(docs) < _BATCH_MODE_MAX_EVENTS:
                more = self._page(docs[-1]["seq"], size)
                if not more:
                    break
                docs.extend(more)
        return docs

    def _round(self, client) -> bool:
        """One pass over the handlers: every due batch is sent at once, then the replies are
        collected and the cursors written in one go. :returns: whether anything moved."""
        now, worked, prepared = time.time(), False, []
        for route in self._routes():
            if self._stopping.is_set():
                break
            record = self._record_of(route.module)
            if record is None or record.get("state") != "running":
                continue
            state = self._state(route)
            if not self._claimed(state) or not state.due(now):
                continue
            if self._retry_dead_letters(client, record, state):
                worked = True
                continue
            docs = self._read(state)
            if not docs:
                if state.mode == "batch":
                    state.last_run = now
                continue
            selected = [d for d in docs if state.matches(d)]
            pending = self._send(client, record, state, selected) if selected else None
            prepared.append((state, record, docs, selected, pending))
        moved = []
        for state, record, docs, selected, pending in prepared:
            skipped = ()
            if pending is not None:
                try:
                    skipped = _skipped(client.receive(pending))
                except InsightsError as err:
                    worked |= self._failed(state, record, selected, err)
                    continue
            state.last_run = now
            state.remember_skipped(skipped)
            moved.append((state, docs[-1]["seq"], len(selected) - len(skipped)))
        if moved:
            self._advance_many(moved)
        return worked or bool(moved)

    def _send(self, client, record, state, docs):
        events = [{"event": d["event"], "meta": {"seq": d["seq"], "id": d["eid"][2:], "source": d.get("source"),
                                                 "received": d.get("received")}} for d in docs]
        return client.send(record, "handler", state.endpoint, events=events,
                           timeout_s=record["limits"]["call_timeout_s"])

    def _call(self, client, record, state, docs) -> None:
        client.receive(self._send(client, record, state, docs))

    def _retry_dead_letters(self, client, record, state) -> bool:
        """Send dead letters an admin asked to retry back through their handler, one by one."""
        letters = self._dead_letters.due_for_retry(state.module, state.name)
        for letter in letters:
            try:
                self._call(client, record, state, [letter])
            except InsightsError as err:
                self._dead_letters.retry_failed(letter, str(err))
                continue
            self._dead_letters.remove(letter)
            state.handled += 1
        return bool(letters)

    def _advance(self, state: HandlerState, seq: int, handled: int) -> None:
        self._advance_many([(state, seq, handled)])

    def _advance_many(self, moved) -> None:
        """Acknowledge ``[(state, seq, handled)]``: cursors written in one bulk write."""
        self._cursors.set_many([(state.module, state.name, seq) for state, seq, _ in moved])
        with self._lock:
            for state, seq, handled in moved:
                state.position = seq
                state.handled += handled
                state.failures = 0
                state.retry_at = 0.0
            self._lock.notify_all()
        if self._on_progress is not None:
            self._on_progress()

    def _failed(self, state, record, selected, err) -> bool:
        state.failures += 1
        state.last_error = str(err) if not err.traceback else f"{err}\n{err.traceback}"
        if len(selected) == 1 and state.failures > record["limits"]["max_retries"]:
            self._dead_letters.add(state.module, state.name, selected[0], state.last_error, state.failures)
            self._advance(state, selected[0]["seq"], 0)
            return True
        if len(selected) > 1 and state.failures == 1:
            state.isolate_until = selected[-1]["seq"]  # the rest of this batch one by one
            return True  # at once, one event at a time, to find the one that fails
        backoff = self._settings.backoff_initial_s * 2 ** min(state.failures - 1, 6)
        state.retry_at = time.time() + min(backoff, self._settings.backoff_max_s)
        return False
