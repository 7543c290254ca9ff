"""Delivering logged events to event handlers, in log order, at least once.

A :class:`Delivery` thread walks the handlers of the modes it serves. For each
it reads the log after the handler's cursor, keeps the events its filter
matches (evaluated here, in hostd, so others never cross to the sandbox), calls
the handler with them, and only then moves the cursor. A failing batch is
retried one event at a time with backoff, so one poison event cannot hold back
the rest: after ``limits.max_retries`` failures that event goes to the module's
dead letters and the handler moves on.

The host runs two: one for ``queued`` and ``batch`` handlers, and one for
``realtime`` handlers, woken by every append so ``POST /event`` can wait for them.
``batch`` handlers are called when ``every`` seconds have passed since their
last run, with everything that arrived since.
"""
from __future__ import annotations

import logging
import threading
import time

import mongoquery

from sandbox.errors import InsightsError
from sandbox.events import Event

from .calls import SandboxClient

__all__ = ["Delivery", "HandlerState", "compile_filter"]

log = logging.getLogger("insights.delivery")
_BATCH_MODE_MAX_EVENTS = 50_000


def _filter_paths(filter_doc) -> set[str]:
    """:returns: every field path a MongoDB-style filter names (through $and/$or/$nor/$not)."""
    paths = set()
    if isinstance(filter_doc, dict):
        for key, value in filter_doc.items():
            if not key.startswith("$"):
                paths.add(key)
            if isinstance(value, (dict, list)):
                paths |= _filter_paths(value) if key.startswith("$") else set()
    elif isinstance(filter_doc, list):
        for item in filter_doc:
            paths |= _filter_paths(item)
    return paths


def _set_path(document: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        child = document.get(part)
        document[part] = child = dict(child) if isinstance(child, dict) else {}
        document = child
    document[leaf] = value


def compile_filter(filter_doc: dict | None, module: str, properties=None):
    """:returns: a predicate over log documents for a handler's ``filter``.

    Paths of the filter that start with an event property (``tincan.verb.id``)
    are matched against the property's value, computed here in hostd. Without a
    filter a module does not receive the events it emitted itself, so chains of
    emitting modules cannot loop by accident; a filter that names ``source``
    decides for itself.
    """
    own = f"module:{module}"
    if not filter_doc:
        return lambda doc: doc.get("source") != own
    query = mongoquery.Query(filter_doc)
    with_source = "source" in _filter_paths(filter_doc)
    property_paths = sorted(p for p in _filter_paths(filter_doc)
                            if properties is not None and properties.property_prefix(p))

    def document(doc):
        view = doc["event"]
        if with_source or property_paths:
            view = dict(view, source=doc.get("source")) if with_source else dict(view)
        if property_paths:
            event = Event(doc["event"], {"seq": doc.get("seq"), "source": doc.get("source")}, properties)
            for path in property_paths:
                try:
                    _, value = properties.value_at(event, path)
                except Exception:  # a property that cannot read this event: the path is absent
                    continue
                _set_path(view, path, value)
        return view

    if with_source:
        return lambda doc: query.match(document(doc))
    return lambda doc: doc.get("source") != own and query.match(document(doc))


class HandlerState:
    """What delivery knows about one handler (also shown in ``/modules``)."""

    def __init__(self, module: str, description: dict, properties=None):
        self.module = module
        self.name = description["name"]
        self.options = description.get("options") or {}
        self.mode = self.options.get("mode", "queued")
        self.matches = compile_filter(self.options.get("filter"), module, properties)
        self.position: int | None = None
        self.handled = 0
        self.failures = 0
        self.isolate_until = 0   # after a failed batch: one event at a time up to this seq
        self.retry_at = 0.0
        self.last_run = time.time()
        self.last_error: str | None = None

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

    :param host: the :class:`hostd.host.Host`.
    :param contexts: the host's :class:`~sandbox.transport.Contexts`.
    :param modes: the handler modes this thread serves.
    :param on_progress: called (from this thread) after a handler's cursor moved.
    """

    def __init__(self, host, contexts, modes=("queued", "batch"), on_progress=None):
        super().__init__(name=f"insights-delivery-{'-'.join(modes)}", daemon=True)
        self._host = host
        self._contexts = contexts
        self.modes = frozenset(modes)
        self._on_progress = on_progress
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._states: dict = {}
        self._lock = threading.Condition()
        self._pages: dict = {}
        self.head = 0

    def stop(self) -> None:
        """End the loop after the call in hand."""
        self._stopping.set()
        self._wake.set()

    def notify(self, seq: int) -> None:
        """New events up to ``seq`` are in the log."""
        self.head = max(self.head, seq)
        self._wake.set()

    def states(self, module: str) -> list[HandlerState]:
        """:returns: the handler states of ``module`` known to this thread."""
        return [s for (m, _), s in list(self._states.items()) if m == module]

    def position(self, module: str, handler: str) -> int | None:
        """:returns: the handler's acknowledged position (None if not seen yet)."""
        state = self._states.get((module, handler))
        return None if state is None else state.position

    def wait_delivered(self, module: str, seq: int, timeout_s: float) -> bool:
        """Block until every handler of ``module`` served here is past ``seq``."""
        deadline = time.time() + timeout_s
        with self._lock:
            while True:
                supervisor = self._host.supervisor(module)
                handlers = [e for e in (supervisor.endpoints or []) if e["class"] == "handler"
                            and (e.get("options") or {}).get("mode", "queued") in self.modes]
                states = {s.name: s for s in self.states(module)}
                if all(h["name"] in states and (states[h["name"]].position or 0) >= seq for h in handlers):
                    return True
                remaining = deadline - time.time()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.1))

    def run(self) -> None:
        client = SandboxClient(self._contexts, self._host.current_record)
        self.head = self._host.eventlog.head()
        interval = self._host.config["events.poll_interval_s"]
        refreshed = time.time()
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                self._pages = {}  # log pages read this round, shared by handlers at one position
                if time.time() - refreshed > 1.0:  # appends we were not told about (other nodes)
                    self.head, refreshed = max(self.head, self._host.eventlog.head()), time.time()
                try:
                    worked = self._round(client)
                except Exception:  # the store or the host hiccuped: retry on the next round
                    log.exception("delivery round failed")
                    worked = False
                if not worked:
                    self._wake.wait(interval)
        finally:
            client.close()

    def _state(self, record, handler) -> HandlerState:
        key = (record["name"], handler["name"])
        state = self._states.get(key)
        if state is None or state.options != (handler.get("options") or {}):
            state = HandlerState(record["name"], handler, self._host.properties)
            cursors = self._host.cursors
            state.position = cursors.get(record["name"], handler["name"])
            if state.position is None:  # a handler seen for the first time
                state.position = 0 if state.options.get("backfill", True) else self._host.eventlog.head()
                cursors.set(record["name"], handler["name"], state.position)
            self._states[key] = state
        return state

    def _page(self, position: int, size: int) -> list[dict]:
        """Read the log after ``position`` once per round, whoever asks."""
        key = (position, size)
        if key not in self._pages:
            self._pages[key] = self._host.eventlog.read_after(position, size)
        return self._pages[key]

    def _read(self, state: HandlerState) -> list[dict]:
        if state.position >= self.head:
            return []  # nothing new: no round trip to the store
        if state.failures or state.position < state.isolate_until:
            return self._page(state.position, 1)
        size = self._host.config["events.batch_size"]
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
        for record, handler in self._host.running_handlers(self.modes):
            if self._stopping.is_set():
                break
            state = self._state(record, handler)
            if not state.due(now):
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
            if pending is not None:
                try:
                    client.receive(pending)
                except InsightsError as err:
                    worked |= self._failed(state, record, selected, err)
                    continue
            state.last_run = now
            moved.append((state, docs[-1]["seq"], len(selected)))
        if moved:
            self._advance_many(moved)
        return worked or bool(moved)

    def _send(self, client, record, state, docs):
        events = [{"event": d["event"], "meta": {"seq": d["seq"], "id": d["eid"][2:], "source": d.get("source"),
                                                 "received": d.get("received")}} for d in docs]
        return client.send(record, "handler", state.name, events=events,
                           timeout_s=record["limits"]["call_timeout_s"])

    def _call(self, client, record, state, docs) -> None:
        client.receive(self._send(client, record, state, docs))

    def _retry_dead_letters(self, client, record, state) -> bool:
        """Send dead letters an admin asked to retry back through their handler, one by one."""
        letters = self._host.dead_letters.due_for_retry(state.module, state.name)
        for letter in letters:
            try:
                self._call(client, record, state, [letter])
            except InsightsError as err:
                self._host.dead_letters.retry_failed(letter, str(err))
                continue
            self._host.dead_letters.remove(letter)
            state.handled += 1
        return bool(letters)

    def _advance(self, state: HandlerState, seq: int, handled: int) -> None:
        self._advance_many([(state, seq, handled)])

    def _advance_many(self, moved) -> None:
        """Acknowledge ``[(state, seq, handled)]``: cursors written in one bulk write."""
        self._host.cursors.set_many([(state.module, state.name, seq) for state, seq, _ in moved])
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
        state.last_error = str(err)
        if len(selected) == 1 and state.failures > record["limits"]["max_retries"]:
            self._host.dead_letters.add(state.module, state.name, selected[0], str(err), state.failures)
            self._advance(state, selected[0]["seq"], 0)
            return True
        if len(selected) > 1 and state.failures == 1:
            state.isolate_until = selected[-1]["seq"]  # the rest of this batch one by one
            return True  # at once, one event at a time, to find the one that fails
        backoff = self._host.config["supervisor.backoff_initial_s"] * 2 ** min(state.failures - 1, 6)
        state.retry_at = time.time() + min(backoff, self._host.config["supervisor.backoff_max_s"])
        return False
