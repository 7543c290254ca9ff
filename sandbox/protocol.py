"""The wire protocol between hostd and sandboxes (shared by both sides).

Every message is a ZeroMQ multipart message whose last two frames are::

    [signature, payload]

* ``payload`` is one msgpack map (``use_bin_type=True``; decoded with
  ``raw=False`` and bounded sizes) holding at least ``v`` (:data:`VERSION`),
  ``type`` (a ``<verb>_request`` / ``<verb>_reply`` name or a one-way
  notification) and ``id`` (unique per sender; a reply carries its request's id).
  Requests that do work carry ``deadline`` (seconds since the epoch).
* ``signature`` is HMAC-SHA256 over ``payload`` with the channel's key, checked
  with :func:`hmac.compare_digest`.
* Inside the signed payload, ``_nonce`` (unique to the sending channel end and
  frame) and ``_sent`` (send time) let a receiver drop replays: a frame older than
  :data:`REPLAY_WINDOW_S`, or whose nonce it has seen, is refused.

A ROUTER socket sees the peer's identity frame(s) before these two; use
:func:`split_envelope`. Nothing is ever pickled.

Message types
-------------
hostd -> sandbox (the sandbox's ``call`` ROUTER socket):
  ``call_request``  ``{kind: view|query|handler|cron, name, params, events?}``
  ``ping_request``  heartbeat
sandbox -> hostd (hostd's ``upcall`` ROUTER socket):
  ``ready``         ``{module, pid, endpoints}`` once the module is loaded
  ``load_failed``   ``{module, traceback}`` then the sandbox exits with
                    :data:`EXIT_LOAD_FAILED`
  ``error_report``  ``{module, endpoint, traceback}`` a module function raised
  ``call_request``  ``{kind: view|query, name, params}`` a cross-module call
  ``emit_request``  ``{events}`` new events from the module
Every ``*_request`` is answered by the matching ``*_reply``:
  ``{ok: True, result}`` or ``{ok: False, error: {code, message, param?}}``.
"""
from __future__ import annotations

import hmac
import itertools
import os
import time

import msgpack

__all__ = [
    "VERSION", "EXIT_LOAD_FAILED", "MAX_MESSAGE_BYTES", "ProtocolError",
    "Signer", "new_key", "request", "reply_ok", "reply_error", "notification",
    "split_envelope",
]

#: Protocol version; a peer speaking another version is dropped.
VERSION = 1
#: Exit status of a sandbox whose module could not be loaded (not restarted in a loop).
EXIT_LOAD_FAILED = 3
#: Largest payload accepted from the wire.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Frames older than this (seconds) are refused; nonces are remembered this long.
REPLAY_WINDOW_S = 120.0

_ids = itertools.count(1)


class ProtocolError(ValueError):
    """A frame failed to verify or decode; the receiver logs and drops it."""


def new_key() -> bytes:
    """:returns: a fresh random 32-byte channel key."""
    return os.urandom(32)


def _default(obj):
    """Convert numpy values (and other array-likes) for msgpack."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError(f"cannot send a {type(obj).__name__} value")


class Signer:
    """Packs, signs, verifies and unpacks messages of one channel, refusing replays.

    :param key: the channel's HMAC key (shared by both ends).
    """

    def __init__(self, key: bytes):
        self._key = key
        self._token = os.urandom(6).hex()  # this sender's part of every nonce
        self._sent = itertools.count(1)
        self._seen: dict = {}              # nonce -> send time, within the replay window
        self._pruned = time.time()
        #: frames refused as replays
        self.replays = 0

    def sign(self, payload: bytes) -> bytes:
        """:returns: the HMAC-SHA256 of ``payload``."""
        return hmac.digest(self._key, payload, "sha256")

    def pack(self, message: dict) -> list[bytes]:
        """:returns: the ``[signature, payload]`` frames of ``message``."""
        stamped = {**message, "_nonce": f"{self._token}{next(self._sent)}", "_sent": time.time()}
        payload = msgpack.packb(stamped, use_bin_type=True, default=_default)
        return [self.sign(payload), payload]

    def unpack(self, frames: list[bytes]) -> dict:
        """Verify and decode the last two frames.

        :raises ProtocolError: bad signature, size, version or encoding.
        """
        if len(frames) < 2:
            raise ProtocolError("message has fewer than two frames")
        signature, payload = frames[-2], frames[-1]
        if len(payload) > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"payload of {len(payload)} bytes is too large")
        if not hmac.compare_digest(signature, self.sign(payload)):
            raise ProtocolError("bad signature")
        try:
            # unpackb bounds every container by the payload's own (already checked) size
            message = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except Exception as err:
            raise ProtocolError(f"undecodable payload: {err}") from err
        if not isinstance(message, dict) or message.get("v") != VERSION:
            raise ProtocolError("not a message of this protocol version")
        self._check_fresh(message)
        return message

    def _check_fresh(self, message: dict) -> None:
        """:raises ProtocolError: the frame is stale or was seen already (a replay)."""
        now, nonce, sent = time.time(), message.pop("_nonce", None), message.pop("_sent", None)
        if not isinstance(nonce, str) or not isinstance(sent, (int, float)) or abs(now - sent) > REPLAY_WINDOW_S:
            self.replays += 1
            raise ProtocolError("stale or unstamped frame")
        if nonce in self._seen:
            self.replays += 1
            raise ProtocolError("replayed frame")
        self._seen[nonce] = sent
        if now - self._pruned > REPLAY_WINDOW_S / 4:
            self._seen = {n: t for n, t in self._seen.items() if now - t <= REPLAY_WINDOW_S}
            self._pruned = now


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Split a ROUTER message into (identity frames, [signature, payload])."""
    return frames[:-2], frames[-2:]


def request(verb: str, timeout_s: float | None = None, **fields) -> dict:
    """Build a ``<verb>_request`` with a fresh id and, given a timeout, a deadline."""
    message = {"v": VERSION, "type": f"{verb}_request", "id": next(_ids), **fields}
    if timeout_s is not None:
        message["deadline"] = time.time() + timeout_s
    return message


def reply_ok(req: dict, result) -> dict:
    """:returns: the successful reply to ``req``."""
    return {"v": VERSION, "type": req["type"].replace("_request", "_reply"),
            "id": req["id"], "ok": True, "result": result}


def reply_error(req: dict, code: str, message: str, **extra) -> dict:
    """:returns: the failed reply to ``req`` (``code`` names a domain error)."""
    return {"v": VERSION, "type": req["type"].replace("_request", "_reply"),
            "id": req["id"], "ok": False, "error": {"code": code, "message": message, **extra}}


def notification(kind: str, **fields) -> dict:
    """:returns: a one-way message (``ready``, ``load_failed``, ``error_report``)."""
    return {"v": VERSION, "type": kind, "id": next(_ids), **fields}
