"""Delivering logged events to event handlers, in log order, at least once.

One thread walks every running module's handlers. For each it reads the log
after the handler's cursor, keeps the events its filter matches (evaluated
here, in hostd, so others never cross to the sandbox), calls the handler with
them, and only then moves the cursor. A failing batch is retried one event at a
time with backoff, so one poison event cannot hold back the rest: after
``limits.max_retries`` failures that event goes to the module's dead letters
and the handler moves on.
"""
from __future__ import annotations

import logging
import threading
import time

import mongoquery

from sandbox.errors import InsightsError

from .calls import SandboxClient

__all__ = ["Delivery", "HandlerState", "compile_filter"]

log = logging.getLogger("insights.delivery")


def compile_filter(filter_doc: dict | None, module: str):
    """:returns: a predicate over log documents for a handler's ``filter``.

    Without a filter a module does not receive the events it emitted itself, so
    chains of emitting modules cannot loop by accident; a filter that names
    ``source`` decides for itself.
    """
    own = f"module:{module}"
    if not filter_doc:
        return lambda doc: doc.get("source") != own
    query = mongoquery.Query(filter_doc)
    if "source" in filter_doc:
        return lambda doc: query.match({**doc["event"], "source": doc.get("source")})
    return lambda doc: doc.get("source") != own and query.match(doc["event"])


class HandlerState:
    """What delivery knows about one handler (also shown in ``/modules``)."""

    def __init__(self, module: str, description: dict):
        self.module = module
        self.name = description["name"]
        self.options = description.get("options") or {}
        self.matches = compile_filter(self.options.get("filter"), module)
        self.position: int | None = None
        self.handled = 0
        self.failures = 0
        self.retry_at = 0.0
        self.last_error: str | None = None

    def stats(self, head: int) -> dict:
        """:returns: this handler's ``/modules`` detail."""
        return {"mode": self.options.get("mode", "queued"), "position": self.position,
                "lag": max(0, head - (self.position or 0)), "handled": self.handled,
                "failures": self.failures, "last_error": self.last_error}


class Delivery(threading.Thread):
    """The delivery thread.

    :param host: the :class:`hostd.host.Host`.
    :param context: the host's ``zmq.Context``.
    """

    def __init__(self, host, context):
        super().__init__(name="insights-delivery", daemon=True)
        self._host = host
        self._context = context
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._states: dict = {}
        self._lock = threading.Condition()
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
        """:returns: the handler states of ``module``."""
        return [s for (m, _), s in list(self._states.items()) if m == module]

    def wait_delivered(self, module: str, seq: int, timeout_s: float) -> bool:
        """Block until every handler of ``module`` is past ``seq``. :returns: whether it happened."""
        deadline = time.time() + timeout_s
        with self._lock:
            while True:
                states = self.states(module)
                handlers = [e for e in (self._host.supervisor(module).endpoints or [])
                            if e["class"] == "handler"]
                if len(states) >= len(handlers) and all((s.position or 0) >= seq for s in states):
                    return True
                remaining = deadline - time.time()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.1))

    def run(self) -> None:
        client = SandboxClient(self._context, self._host.current_record)
        self.head = self._host.eventlog.head()
        interval = self._host.config["events.poll_interval_s"]
        try:
            while not self._stopping.is_set():
                worked = False
                for record, handler in self._host.running_handlers():
                    if self._stopping.is_set():
                        break
                    try:
                        worked |= self._deliver(client, record, handler)
                    except Exception:  # the store or the host hiccuped: retry on the next round
                        log.exception("delivery to %s.%s failed", record["name"], handler["name"])
                if not worked:
                    self._wake.wait(interval)
                    self._wake.clear()
        finally:
            client.close()

    def _state(self, record, handler) -> HandlerState:
        key = (record["name"], handler["name"])
        state = self._states.get(key)
        if state is None or state.options != (handler.get("options") or {}):
            state = HandlerState(record["name"], handler)
            cursors = self._host.cursors
            state.position = cursors.get(record["name"], handler["name"])
            if state.position is None:  # a handler seen for the first time
                state.position = 0 if state.options.get("backfill", True) else self._host.eventlog.head()
                cursors.set(record["name"], handler["name"], state.position)
            self._states[key] = state
        return state

    def _deliver(self, client, record, handler) -> bool:
        state = self._state(record, handler)
        if state.retry_at > time.time():
            return False
        limit = 1 if state.failures else self._host.config["events.batch_size"]
        docs = self._host.eventlog.read_after(state.position, limit)
        if not docs:
            return False
        selected = [d for d in docs if state.matches(d)]
        if selected:
            events = [{"event": d["event"], "meta": {"seq": d["seq"], "id": d["eid"][2:],
                                                      "source": d.get("source"), "received": d.get("received")}}
                      for d in selected]
            try:
                client.call(record, "handler", handler["name"], events=events,
                            timeout_s=record["limits"]["call_timeout_s"])
            except InsightsError as err:
                return self._failed(state, record, selected, err)
        self._advance(state, docs[-1]["seq"], len(selected))
        return True

    def _advance(self, state: HandlerState, seq: int, handled: int) -> None:
        self._host.cursors.set(state.module, state.name, seq)
        with self._lock:
            state.position = seq
            state.handled += handled
            state.failures = 0
            self._lock.notify_all()

    def _failed(self, state, record, selected, err) -> bool:
        state.failures += 1
        state.last_error = str(err)
        limits = record["limits"]
        if len(selected) == 1 and state.failures > limits["max_retries"]:
            self._host.dead_letter(state.module, state.name, selected[0], str(err), state.failures)
            self._advance(state, selected[0]["seq"], 0)
            return True
        backoff = self._host.config["supervisor.backoff_initial_s"] * 2 ** min(state.failures - 1, 6)
        state.retry_at = time.time() + min(backoff, self._host.config["supervisor.backoff_max_s"])
        return False
