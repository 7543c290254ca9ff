"""The ingest thread: the event log's single appender, and where realtime waits end.

Web workers (``POST /event``) and the broker (``emit``) send ``append_request``
messages to its ROUTER socket. It takes every request already waiting, writes
their events with one :meth:`~hostd.eventlog.EventLog.append`, then answers each
request with its own part of the result, so the log is written in large batches
and always by one writer.

A request from the web (``realtime: true``) whose new events match realtime
handlers is answered only once those handlers are past the events (or at its
deadline, with ``realtime_timeout`` set): the realtime delivery thread calls
:meth:`IngestThread.realtime_progress` whenever a handler moved on. So the event
path is one line: POST -> log -> matching handlers -> answer.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import zmq

from sandbox import protocol

from .waker import Waker

__all__ = ["IngestThread", "IngestClient"]

log = logging.getLogger("insights.ingest")
_MAX_BATCH_EVENTS = 5000


@dataclass
class _RealtimeWait:
    """An answered-later append: its requester, the answer, and what it waits for."""

    identity: list
    request: dict
    result: dict
    handlers: dict  # {(module, handler): [seq of each event it may match]}
    seq: int
    deadline: float


class IngestThread(threading.Thread):
    """The appender.

    :param endpoint: where to bind the ROUTER.
    :param key: the control key requests are signed with.
    :param eventlog: the :class:`~hostd.eventlog.EventLog`.
    :param on_appended: called with the last ``seq`` after each write.
    :param context: the host's ``zmq.Context``.
    :param realtime_matches: ``f(events, source) -> {(module, handler): [event indexes]}``: the
        realtime handlers a request's new events may match (the request then waits for them).
    :param realtime_position: ``f(module, handler) -> seq | None``: where a realtime handler is.
    :param realtime_handled: ``f(module, handler, seqs) -> bool``: whether the handler ran on one
        of these events (its sandbox acknowledges those its property clauses reject unhandled).
    :param realtime_timeout_s: how long a request waits for its realtime handlers.
    """

    def __init__(self, endpoint, key, eventlog, on_appended, context, realtime_matches=None,
                 realtime_position=None, realtime_timeout_s: float = 10.0, realtime_handled=None):
        super().__init__(name="insights-ingest", daemon=True)
        self._endpoint = endpoint
        self._signer = protocol.Signer(key)
        self._log = eventlog
        self._on_appended = on_appended
        self._context = context
        self._realtime_matches = realtime_matches
        self._realtime_position = realtime_position
        self._realtime_handled = realtime_handled or (lambda module, handler, seqs: True)
        self._realtime_timeout_s = realtime_timeout_s
        self._waits: list[_RealtimeWait] = []
        self._waker = Waker(context, "ingest")
        self._stopping = threading.Event()
        self._bound = threading.Event()

    def wait_bound(self, timeout: float = 10.0) -> None:
        """Block until the socket is bound."""
        if not self._bound.wait(timeout):
            raise RuntimeError("ingest thread did not start")

    def stop(self) -> None:
        """Ask the loop to end after the batch in hand."""
        self._stopping.set()
        self._waker.wake()

    def realtime_progress(self) -> None:
        """A realtime handler moved on: look at the waiting requests (callable from any thread)."""
        if self._waits:
            self._waker.wake()

    def run(self) -> None:
        sock = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.bind(self._endpoint)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._waker.socket, zmq.POLLIN)
        self._bound.set()
        try:
            while not self._stopping.is_set():
                ready = dict(poller.poll(self._poll_timeout_ms()))
                if self._waker.socket in ready:
                    self._waker.drain()
                if sock in ready:
                    batch = self._drain(sock)
                    if batch:
                        self._write(sock, batch)
                self._answer_waits(sock)
        finally:
            sock.close()
            self._waker.close()

    def _poll_timeout_ms(self) -> int:
        if not self._waits:
            return 200
        soonest = min(wait.deadline for wait in self._waits)
        return max(1, min(200, int((soonest - time.time()) * 1000) + 1))

    def _drain(self, sock) -> list:
        batch, count = [], 0
        while count < _MAX_BATCH_EVENTS:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            identity, body = protocol.split_envelope(frames)
            try:
                message = self._signer.unpack(body)
            except protocol.ProtocolError as err:
                log.warning("ingest: dropped a message: %s", err)
                continue
            if message.get("type") != "append_request":
                continue
            batch.append((identity, message))
            count += len(message.get("events") or [])
        return batch

    def _write(self, sock, batch) -> None:
        by_source: dict = {}
        for item in batch:
            by_source.setdefault(item[1].get("source", "http"), []).append(item)
        for source, items in by_source.items():
            events = [e for _, m in items for e in m["events"]]
            try:
                result = self._log.append(events, source)
            except Exception:  # the store is down: answer each request with the error
                log.exception("ingest: append failed")  # the store's error may quote documents: log only
                for identity, message in items:
                    self._reply(sock, identity, protocol.reply_error(message, "store_unavailable",
                                                                     "event log unavailable"))
                continue
            if result["last_seq"] is not None:
                self._on_appended(result["last_seq"])
            offset, new = 0, set(result["new_ids"])
            seq_of = dict(zip(result["new_ids"], result.get("new_seqs") or ()))
            for identity, message in items:
                count = len(message["events"])
                ids = result["ids"][offset:offset + count]
                offset += count
                fresh = [(e, i) for e, i in zip(message["events"], ids) if i in new]
                counts = _split_counts(ids, new)  # an id first logged by this request is accepted here
                answer = {"ids": ids, "last_seq": result["last_seq"], "realtime": False, **counts}
                handlers = {}
                if fresh and message.get("realtime") and self._realtime_matches:
                    matches = self._realtime_matches([e for e, _ in fresh], source)
                    handlers = {key: [seq_of.get(fresh[i][1]) for i in hits] for key, hits in matches.items()}
                if handlers:
                    self._waits.append(_RealtimeWait(identity, message, answer, handlers, result["last_seq"],
                                                     time.time() + self._realtime_timeout_s))
                else:
                    self._reply(sock, identity, protocol.reply_ok(message, answer))

    def _reply(self, sock, identity, reply: dict) -> None:
        sock.send_multipart(identity + self._signer.pack(reply))

    def _answer_waits(self, sock) -> None:
        """Answer the requests whose realtime handlers are all past their events, or out of time."""
        if not self._waits:
            return
        now, waiting = time.time(), []
        for wait in self._waits:
            late = [f"{m}.{h}" for m, h in wait.handlers if (self._realtime_position(m, h) or 0) < wait.seq]
            if not late:
                ran = any(self._realtime_handled(m, h, seqs) for (m, h), seqs in wait.handlers.items())
                self._reply(sock, wait.identity, protocol.reply_ok(wait.request, {**wait.result, "realtime": ran}))
            elif wait.deadline <= now:
                self._reply(sock, wait.identity, protocol.reply_ok(wait.request, {
                    **wait.result, "realtime": True,
                    "realtime_timeout": f"realtime handlers did not finish in time: {', '.join(late)}"}))
            else:
                waiting.append(wait)
        self._waits = waiting


def _split_counts(ids, new: set) -> dict:
    """Count one request's events new to the log; ``new`` loses them (first come, first counted)."""
    accepted = 0
    for identity in dict.fromkeys(ids):
        if identity in new:
            new.discard(identity)
            accepted += 1
    return {"accepted": accepted, "duplicates": len(ids) - accepted}


class IngestClient:
    """Sends events to the ingest thread and waits until they are logged.

    :param context: a ``zmq.Context`` of this process.
    :param endpoint: the ingest socket.
    :param key: the control key.
    """

    def __init__(self, context, endpoint, key):
        self._sock = context.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(endpoint)
        self._signer = protocol.Signer(key)

    def append(self, events: list[dict], source: str = "http", timeout_s: float = 30.0,
               realtime: bool = False) -> dict:
        """:returns: ``{"accepted", "duplicates", "ids", "last_seq", "realtime"}`` once durably
            logged; with ``realtime``, once the realtime handlers the events match ran too
            (``realtime`` is then True, and ``realtime_timeout`` says which did not finish in time).

        :raises InsightsError: the log could not be written (or no answer in time).
        """
        from sandbox.errors import StoreUnavailable, error_from_reply
        message = protocol.request("append", timeout_s, events=events, source=source, realtime=realtime)
        self._sock.send_multipart(self._signer.pack(message))
        while self._sock.poll(timeout_s * 1000):
            reply = self._signer.unpack(self._sock.recv_multipart())
            if reply.get("id") != message["id"]:
                continue
            if reply.get("ok"):
                return reply["result"]
            raise error_from_reply(reply.get("error") or {})
        raise StoreUnavailable("the event log did not answer in time")

    def close(self) -> None:
        """Close the socket."""
        self._sock.close(0)
