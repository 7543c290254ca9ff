"""Calling into sandboxes from hostd's processes (web workers, delivery, harness).

A :class:`SandboxClient` belongs to one thread. It keeps one DEALER socket per
module, connected to the module's ``call`` endpoint; ZeroMQ reconnects it by
itself when the sandbox restarts on the same endpoint. Each call carries an id
and a deadline; replies to calls that were given up on are discarded.
"""
from __future__ import annotations

import os
import time

import zmq

from sandbox import protocol
from sandbox.errors import ModuleCrashed, ModuleTimeout, error_from_reply

__all__ = ["SandboxClient", "process_alive"]

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


class SandboxClient:
    """Synchronous calls to sandboxes, for the thread that created it.

    :param context: a ``zmq.Context`` created in this process.
    :param current_record: callable ``current_record(module) -> record | None`` giving
        the module's latest table record, used to notice a sandbox that died
        during a call (the call then raises :class:`ModuleCrashed`).
    """

    def __init__(self, context: zmq.Context, current_record=None):
        self._context = context
        self._current = current_record
        self._sockets: dict = {}
        self._waiting: set = set()   # (module, id) of calls sent and not yet received
        self._replies: dict = {}     # replies that arrived while waiting for another call

    def _socket(self, record: dict):
        key = (record["name"], record["call_endpoint"], record["key"])
        entry = self._sockets.get(record["name"])
        if entry is None or entry[0] != key:
            if entry is not None:
                entry[1].close(0)
            sock = self._context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            # A blocking recv with a timeout: far cheaper per round trip than zmq.poll
            sock.setsockopt(zmq.RCVTIMEO, _SLICE_MS)
            sock.connect(record["call_endpoint"])
            entry = (key, sock, protocol.Signer(bytes.fromhex(record["key"])))
            self._sockets[record["name"]] = entry
        return entry[1], entry[2]

    def send(self, record: dict, kind: str, name: str, params=None, timeout_s: float = 30.0,
             **fields) -> dict:
        """Send a call without waiting. :returns: a pending call for :meth:`receive`."""
        sock, signer = self._socket(record)
        message = protocol.request("call", timeout_s, kind=kind, name=name, params=params or {},
                                   **fields)
        sock.send_multipart(signer.pack(message))
        self._waiting.add((record["name"], message["id"]))
        return {"record": record, "id": message["id"], "deadline": message["deadline"],
                "pid": record.get("pid"), "what": f"{kind} {name!r}", "timeout_s": timeout_s}

    def receive(self, pending: dict):
        """Wait for a sent call's reply.

        :returns: the endpoint's result.
        :raises ModuleTimeout: no answer before the deadline.
        :raises ModuleCrashed: the sandbox died during the call.
        :raises InsightsError: the error the sandbox answered (bad parameter, module raised...).
        """
        record, module = pending["record"], pending["record"]["name"]
        key = (module, pending["id"])
        sock, signer = self._socket(record)
        try:
            while key not in self._replies:
                if pending["deadline"] - time.time() <= 0:
                    raise ModuleTimeout(f"{pending['what']} of module {module!r} did not answer"
                                        f" within {pending['timeout_s']:g} s")
                try:
                    frames = sock.recv_multipart()
                except zmq.Again:
                    if not self._still_serving(module, pending["pid"]):
                        raise ModuleCrashed(f"module {module!r} died during {pending['what']}") from None
                    continue
                try:
                    reply = signer.unpack(frames)
                except protocol.ProtocolError:
                    continue
                if (module, reply.get("id")) in self._waiting:  # ours, or another call in flight
                    self._replies[(module, reply.get("id"))] = reply
                # else: the late answer to a call given up on
            reply = self._replies.pop(key)
        except (ModuleCrashed, ModuleTimeout):
            self._reset(module)  # what is still queued for that sandbox must not reach its successor
            raise
        finally:
            self._waiting.discard(key)
            self._replies.pop(key, None)
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
        entry = self._sockets.pop(module, None)
        if entry is not None:
            entry[1].close(0)  # LINGER 0: queued messages are dropped

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
        for _, sock, _ in self._sockets.values():
            sock.close(0)
        self._sockets.clear()
