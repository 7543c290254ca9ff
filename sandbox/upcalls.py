"""Calls from a sandbox to hostd: cross-module ``query``/``view`` proxies and ``emit``.

The sandbox is single-threaded. While it waits for an upcall's reply it keeps
serving requests that arrive on its own call socket (``serve_one``), so a view
that calls a query of its own module, or module A calling B calling A, cannot
deadlock.
"""
from __future__ import annotations

import time

import zmq

from . import protocol
from .endpoints import Endpoints, Timeout, caller_error

__all__ = ["Upcaller", "EndpointProxy"]


class Upcaller:
    """Sends requests to hostd's upcall socket and waits for their replies.

    :param socket: a DEALER connected to hostd's upcall ROUTER.
    :param signer: the channel's :class:`~sandbox.protocol.Signer`.
    :param server: the sandbox's own call socket, served while waiting (or None).
    :param serve_one: callable serving one message from ``server``.
    :param default_timeout_s: deadline of calls made without one.
    """

    def __init__(self, socket, signer, server=None, serve_one=None, default_timeout_s=30.0):
        self._socket = socket
        self._signer = signer
        self._server = server
        self._serve_one = serve_one
        self._timeout = default_timeout_s
        self._replies: dict = {}
        self._poller = zmq.Poller()
        self._poller.register(socket, zmq.POLLIN)
        if server is not None:
            self._poller.register(server, zmq.POLLIN)

    def notify(self, kind: str, **fields) -> None:
        """Send a one-way message (``ready``, ``error_report``...)."""
        self._socket.send_multipart(self._signer.pack(protocol.notification(kind, **fields)))

    def call(self, verb: str, timeout_s: float | None = None, **fields):
        """Send ``<verb>_request`` and return its result.

        :raises ModuleTimeout: no reply before the deadline.
        :raises InsightsError: the error hostd or the other module answered.
        """
        message = protocol.request(verb, timeout_s or self._timeout, **fields)
        self._socket.send_multipart(self._signer.pack(message))
        request_id, deadline = message["id"], message["deadline"]
        while request_id not in self._replies:
            remaining = deadline - time.time()
            if remaining <= 0:
                raise Timeout(f"{verb} {fields.get('name', '')!s} did not answer in time")
            for sock, _ in self._poller.poll(min(remaining, 1.0) * 1000):
                if sock is self._socket:
                    self._receive()
                elif self._serve_one is not None:
                    self._serve_one()
        reply = self._replies.pop(request_id)
        if reply.get("ok"):
            return reply.get("result")
        error = caller_error(reply.get("error") or {})
        error.nested = True  # another endpoint's error: never the caller's fault
        raise error

    def _receive(self) -> None:
        try:
            reply = self._signer.unpack(self._socket.recv_multipart(zmq.NOBLOCK))
        except (zmq.Again, protocol.ProtocolError):
            return
        self._replies[reply.get("id")] = reply
        if len(self._replies) > 1000:  # replies nobody waits for any more (timed out)
            for stale in sorted(self._replies)[:500]:
                self._replies.pop(stale, None)


def _entries(descriptions) -> list[dict]:
    """:returns: ``/schema`` entries (one per name, aliases included) of endpoint descriptions."""
    return [{**d, "name": name} for d in descriptions if d["class"] in ("view", "query")
            for name in [d["name"], *d.get("aliases", [])]]


class EndpointProxy(Endpoints):
    """``query.get_grades(course="x")``: calls any module's query (or view) through hostd.

    An :class:`~sandbox.endpoints.Endpoints` namespace: the module's own endpoints
    have their real signatures and are listed by ``dir()``; any other name gives a
    function calling through hostd, which raises :class:`~sandbox.endpoints.NotFound`
    when no module has it. Every error raised is marked ``nested``: a failed call
    is the calling module's error, not its caller's.

    :param upcaller: the sandbox's :class:`Upcaller`.
    :param kind: ``"query"`` or ``"view"``.
    :param local: callable ``local(kind, name)`` returning a function that answers for
        this very module without a round trip, or ``None`` if it has no such endpoint.
    :param known: callable giving the module's own endpoint descriptions (for ``dir()``
        and signatures).
    """

    def __init__(self, upcaller: Upcaller, kind: str, local=None, known=None):
        def entries(refresh):
            return _entries(known()) if known is not None else []

        def call(kind, name, params):
            function = local(kind, name) if local is not None else None
            if function is not None:
                return function(**params)
            return upcaller.call("call", kind=kind, name=name, params=params)
        super().__init__(kind, entries, call, open_names=True, nested=True)
