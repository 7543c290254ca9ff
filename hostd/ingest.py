"""The ingest thread: the event log's single appender.

Web workers (``POST /event``) and the broker (``emit``) send ``append_request``
messages to its ROUTER socket. It takes every request already waiting, writes
their events with one :meth:`~hostd.eventlog.EventLog.append`, then answers each
request with its own part of the result, so the log is written in large batches
and always by one writer.
"""
from __future__ import annotations

import logging
import threading

import zmq

from sandbox import protocol

__all__ = ["IngestThread", "IngestClient"]

log = logging.getLogger("insights.ingest")
_MAX_BATCH_EVENTS = 5000


class IngestThread(threading.Thread):
    """The appender.

    :param endpoint: where to bind the ROUTER.
    :param key: the control key requests are signed with.
    :param eventlog: the :class:`~hostd.eventlog.EventLog`.
    :param on_appended: called with the last ``seq`` after each write.
    :param context: the host's ``zmq.Context``.
    :param realtime_matches: ``f(events, source) -> [[module, handler], ...]``: the realtime
        handlers a request's new events match (the request then waits for them).
    """

    def __init__(self, endpoint, key, eventlog, on_appended, context, realtime_matches=None):
        super().__init__(name="insights-ingest", daemon=True)
        self._endpoint = endpoint
        self._signer = protocol.Signer(key)
        self._log = eventlog
        self._on_appended = on_appended
        self._context = context
        self._realtime_matches = realtime_matches
        self._stopping = threading.Event()
        self._bound = threading.Event()

    def wait_bound(self, timeout: float = 10.0) -> None:
        """Block until the socket is bound."""
        if not self._bound.wait(timeout):
            raise RuntimeError("ingest thread did not start")

    def stop(self) -> None:
        """Ask the loop to end after the batch in hand."""
        self._stopping.set()

    def run(self) -> None:
        sock = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.bind(self._endpoint)
        self._bound.set()
        try:
            while not self._stopping.is_set():
                if not sock.poll(200):
                    continue
                batch = self._drain(sock)
                if batch:
                    self._write(sock, batch)
        finally:
            sock.close()

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
            except Exception as err:  # the store is down: answer each request with the error
                log.exception("ingest: append failed")
                for identity, message in items:
                    sock.send_multipart(identity + self._signer.pack(
                        protocol.reply_error(message, "store_unavailable", f"event log unavailable: {err}")))
                continue
            if result["last_seq"] is not None:
                self._on_appended(result["last_seq"])
            offset, new = 0, set(result["new_ids"])
            for identity, message in items:
                count = len(message["events"])
                ids = result["ids"][offset:offset + count]
                offset += count
                fresh = [e for e, i in zip(message["events"], ids) if i in new]
                counts = _split_counts(ids, new)  # an id first logged by this request is accepted here
                realtime = self._realtime_matches(fresh, source) if fresh and self._realtime_matches else []
                sock.send_multipart(identity + self._signer.pack(protocol.reply_ok(message, {
                    "ids": ids, "last_seq": result["last_seq"], "realtime": realtime, **counts})))


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

    def append(self, events: list[dict], source: str = "http", timeout_s: float = 30.0) -> dict:
        """:returns: ``{"accepted", "duplicates", "ids", "last_seq"}`` once durably logged.

        :raises InsightsError: the log could not be written (or no answer in time).
        """
        from sandbox.errors import InsightsError, error_from_reply
        message = protocol.request("append", timeout_s, events=events, source=source)
        self._sock.send_multipart(self._signer.pack(message))
        while self._sock.poll(timeout_s * 1000):
            reply = self._signer.unpack(self._sock.recv_multipart())
            if reply.get("id") != message["id"]:
                continue
            if reply.get("ok"):
                return reply["result"]
            raise error_from_reply(reply.get("error") or {})
        raise InsightsError("the event log did not answer in time")

    def close(self) -> None:
        """Close the socket."""
        self._sock.close(0)
