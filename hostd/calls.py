"""Calling into sandboxes from hostd's processes (web workers, delivery, harness).

A :class:`SandboxClient` belongs to one thread. It keeps one DEALER socket per
module, connected to the module's ``call`` endpoint, made in the context whose
I/O thread runs on the sandbox's CPU (:meth:`sandbox.transport.Contexts.near`);
ZeroMQ reconnects it by itself when the sandbox restarts on the same endpoint.
Each call carries an id and a deadline; replies to calls that were given up on
are discarded.
"""
from __future__ import annotations

import os
import time
from typing import NamedTuple

import zmq

from sandbox import protocol
from sandbox.errors import ModuleCrashed, ModuleTimeout, error_from_reply
from sandbox.transport import Contexts

__all__ = ["SandboxClient", "PendingCall", "process_alive"]

_SLICE_MS = 50  # how often a waiting call checks that the sandbox is still alive


def process_alive(pid) -> bool:
    """:returns: whether process ``pid`` exists and is not a zombie."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


class _Channel(NamedTuple):
    """One module's connection: what it was made for, its socket and signer, the latest record."""

    key: tuple
    socket: zmq.Socket
    signer: protocol.Signer
    record: dict


class PendingCall:
    """A call sent to a sandbox whose reply :meth:`SandboxClient.receive` waits for."""

    __slots__ = ("record", "id", "deadline", "kind", "name", "timeout_s")

    def __init__(self, record: dict, call_id: int, deadline: float, kind: str, name: str,
                 timeout_s: float):
        self.record, self.id, self.deadline = record, call_id, deadline
        self.kind, self.name, self.timeout_s = kind, name, timeout_s

    @property
    def what(self) -> str:
        """``query 'name'``: the call, for error messages."""
        return f"{self.kind} {self.name!r}"


class SandboxClient:
    """Synchronous calls to sandboxes, for the thread that created it.

    :param contexts: the :class:`~sandbox.transport.Contexts` of this process.
    :param current_record: callable ``current_record(module) -> record | None`` giving
        the module's latest table record, used to notice a sandbox that died
        during a call (the call then raises :class:`ModuleCrashed`).
    """

    def __init__(self, contexts: Contexts, current_record=None):
        self._contexts = contexts
        self._current = current_record
        self._channels: dict = {}    # module -> _Channel
        self._waiting: set = set()   # (module, id) of calls sent and not yet received
        self._replies: dict = {}     # replies that arrived while waiting for another call

    def _socket(self, record: dict):
        """:returns: ``(socket, signer)`` of the module of ``record``, (re)connected as needed."""
        channel = self._channels.get(record["name"])
        if channel is not None and channel.record is record:  # the common case: the same table record
            return channel.socket, channel.signer
        key = (record["name"], record["call_endpoint"], record["key"], record.get("cpu"))
        if channel is None or channel.key != key:
            if channel is not None:
                channel.socket.close(0)
            sock = self._contexts.near(record.get("cpu")).socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            # A blocking recv with a timeout: far cheaper per round trip than zmq.poll
            sock.setsockopt(zmq.RCVTIMEO, _SLICE_MS)
            sock.connect(record["call_endpoint"])
            channel = _Channel(key, sock, protocol.Signer(bytes.fromhex(record["key"])), record)
        else:  # a new record of the same sandbox (its state or counters changed)
            channel = channel._replace(record=record)
        self._channels[record["name"]] = channel
        return channel.socket, channel.signer

    def send(self, record: dict, kind: str, name: str, params=None, timeout_s: float = 30.0,
             **fields) -> "PendingCall":
        """Send a call without waiting. :returns: a pending call for :meth:`receive`."""
        sock, signer = self._socket(record)
        message = protocol.request("call", timeout_s, kind=kind, name=name, params=params or {},
                                   **fields)
        sock.send(signer.pack_frame(message))  # one frame: send_multipart costs more
        pending = PendingCall(record, message["id"], message["deadline"], kind, name, timeout_s)
        self._waiting.add((record["name"], pending.id))
        return pending

    def receive(self, pending: "PendingCall"):
        """Wait for a sent call's reply.

        :returns: the endpoint's result.
        :raises ModuleTimeout: no answer before the deadline.
        :raises ModuleCrashed: the sandbox died during the call.
        :raises InsightsError: the error the sandbox answered (bad parameter, module raised...).
        """
        module = pending.record["name"]
        key = (module, pending.id)
        sock, signer = self._socket(pending.record)
        try:
            reply = self._replies.pop(key, None)  # arrived while waiting for another call
            while reply is None:
                if pending.deadline - time.time() <= 0:
                    raise ModuleTimeout(f"{pending.what} of module {module!r} did not answer"
                                        f" within {pending.timeout_s:g} s")
                try:
                    frame = sock.recv()  # a sandbox answers with one frame
                except zmq.Again:
                    if not self._still_serving(module, pending.record.get("pid")):
                        raise ModuleCrashed(f"module {module!r} died during {pending.what}") from None
                    continue
                try:
                    answer = signer.unpack_frame(frame)
                except protocol.ProtocolError:
                    continue
                answer_id = answer.get("id")
                if answer_id == pending.id:
                    reply = answer
                elif (module, answer_id) in self._waiting:  # another call in flight
                    self._replies[(module, answer_id)] = answer
                # else: the late answer to a call given up on
        except (ModuleCrashed, ModuleTimeout):
            self._reset(module)  # what is still queued for that sandbox must not reach its successor
            raise
        finally:
            self._waiting.discard(key)
        if reply.get("ok"):
            return reply.get("result")
        raise error_from_reply(reply.get("error") or {})

    def call(self, record: dict, kind: str, name: str, params=None, timeout_s: float = 30.0,
             **fields):
        """Call endpoint ``kind`` ``name`` of the module of ``record`` and wait for its result.

        :raises ModuleTimeout: no answer before ``timeout_s``.
        :raises ModuleCrashed: the sandbox died during the call.
        :raises InsightsError: the error the sandbox answered (bad parameter, module raised...).
        """
        return self.receive(self.send(record, kind, name, params, timeout_s, **fields))

    def _reset(self, module: str) -> None:
        channel = self._channels.pop(module, None)
        if channel is not None:
            channel.socket.close(0)  # LINGER 0: queued messages are dropped

    def _still_serving(self, module: str, pid) -> bool:
        if not process_alive(pid):
            return False
        if self._current is not None:
            latest = self._current(module)
            if latest is None or latest.get("pid") != pid:
                return False
        return True

    def close(self) -> None:
        """Close every socket."""
        for channel in self._channels.values():
            channel.socket.close(0)
        self._channels.clear()
