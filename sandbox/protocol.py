"""The wire protocol between hostd and sandboxes (shared by both sides).

Every message is a ZeroMQ message whose last frame is::

    signature + payload

(one frame rather than two: every extra frame costs a measurable part of a
round trip).

* ``payload`` is one msgpack map (``use_bin_type=True``; decoded with
  ``raw=False`` and bounded sizes) holding at least ``v`` (:data:`VERSION`),
  ``type`` (a ``<verb>_request`` / ``<verb>_reply`` name or a one-way
  notification) and ``id`` (unique per sender; a reply carries its request's id).
  Requests that do work carry ``deadline`` (seconds since the epoch).
* ``signature`` (the first :data:`SIGNATURE_BYTES` bytes) is HMAC-BLAKE2s over
  ``payload`` with the channel's key, checked with :func:`hmac.compare_digest`.
* Inside the signed payload, ``_nonce`` (``[sender token, counter]``: a random
  token per sending :class:`Signer` and a counter that only grows) and ``_sent``
  (send time) let a receiver drop replays: a frame older than
  :data:`REPLAY_WINDOW_S`, or whose counter it has seen from that sender, is
  refused. The receiver keeps, per sender, the highest counter and a bitmap of
  the :data:`REORDER_WINDOW` counters below it (the scheme of IPsec's
  anti-replay window), so its memory does not grow with the traffic.

A ROUTER socket sees the peer's identity frame(s) before it; use
:func:`split_envelope`. Nothing is ever pickled.

Message types
-------------
hostd -> sandbox (the sandbox's ``call`` ROUTER socket):
  ``call_request``  ``{kind: view|query|handler|cron, name, params, events?}``
  ``ping_request``  heartbeat
sandbox -> hostd (hostd's ``upcall`` ROUTER socket):
  ``ready``         ``{module, pid, endpoints, manifest, confinement, cpu}`` once the
                    module is loaded (``cpu``: the one CPU it runs on, or nil)
  ``load_failed``   ``{module, traceback}`` then the sandbox exits with
                    :data:`EXIT_LOAD_FAILED`
  ``error_report``  ``{module, endpoint, traceback}`` a module function raised
  ``call_request``  ``{kind: view|query, name, params}`` a cross-module call
  ``emit_request``  ``{events}`` new events from the module
Every ``*_request`` is answered by the matching ``*_reply``:
  ``{ok: True, result}`` or ``{ok: False, error: {code, message, param?}}``.
"""
from __future__ import annotations

import hashlib
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
#: Length of the HMAC-BLAKE2s signature that starts every message frame.
SIGNATURE_BYTES = 32
_BLOCK_BYTES = hashlib.blake2s().block_size  # 64: HMAC pads the key to the hash's block
#: Largest payload accepted from the wire.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Frames older than this (seconds) are refused; a silent sender is forgotten after it.
REPLAY_WINDOW_S = 120.0
#: How far behind a sender's newest frame an older one may still arrive (in frames).
REORDER_WINDOW = 1024
_REORDER_MASK = (1 << REORDER_WINDOW) - 1

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
        # HMAC (RFC 2104) over BLAKE2s: OpenSSL's SHA-256 costs far more per small message (a
        # provider lookup per call), measured in the query round trip. The inner and outer
        # hashes are keyed once here and copied per message.
        block = key if len(key) <= _BLOCK_BYTES else hashlib.blake2s(key).digest()
        block = block.ljust(_BLOCK_BYTES, b"\0")
        self._inner = hashlib.blake2s(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.blake2s(bytes(b ^ 0x5C for b in block))
        self._token = os.urandom(8).hex()  # this sender's part of every nonce
        self._sent = itertools.count(1)
        self._peers: dict = {}             # sender token -> [highest counter, bitmap, last seen]
        self._pruned = time.time()
        #: frames refused as replays
        self.replays = 0

    def sign(self, payload: bytes) -> bytes:
        """:returns: the HMAC-BLAKE2s of ``payload`` (:data:`SIGNATURE_BYTES` long)."""
        inner = self._inner.copy()
        inner.update(payload)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def pack(self, message: dict) -> list[bytes]:
        """Stamp ``message`` (``_nonce``, ``_sent``) and encode it.

        :returns: the frames of ``message``: one, ``signature + payload``.
        """
        return [self.pack_frame(message)]

    def pack_frame(self, message: dict) -> bytes:
        """Like :meth:`pack`, for a socket sending exactly one frame. :returns: the frame."""
        message["_nonce"] = [self._token, next(self._sent)]
        message["_sent"] = time.time()
        payload = msgpack.packb(message, use_bin_type=True, default=_default)
        return self.sign(payload) + payload

    def unpack(self, frames: list[bytes]) -> dict:
        """Verify and decode the last frame (identity frames before it are ignored).

        :raises ProtocolError: bad signature, size, version or encoding.
        """
        if not frames:
            raise ProtocolError("message has no frame")
        return self.unpack_frame(frames[-1])

    def unpack_frame(self, frame: bytes) -> dict:
        """Verify and decode one message frame. :raises ProtocolError: as :meth:`unpack`."""
        if len(frame) > MAX_MESSAGE_BYTES + SIGNATURE_BYTES:
            raise ProtocolError(f"payload of {len(frame) - SIGNATURE_BYTES} bytes is too large")
        if len(frame) <= SIGNATURE_BYTES:
            raise ProtocolError("frame too short to hold a signature and a payload")
        view = memoryview(frame)  # no copy of a large payload
        signature, payload = view[:SIGNATURE_BYTES], view[SIGNATURE_BYTES:]
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
        if (not isinstance(nonce, list) or len(nonce) != 2 or not isinstance(nonce[0], str)
                or not isinstance(nonce[1], int) or nonce[1] < 1
                or not isinstance(sent, (int, float)) or abs(now - sent) > REPLAY_WINDOW_S):
            self.replays += 1
            raise ProtocolError("stale or unstamped frame")
        token, counter = nonce
        peer = self._peers.get(token)
        if peer is None:
            self._peers[token] = [counter, 1, now]
        elif counter > peer[0]:
            peer[1] = ((peer[1] << (counter - peer[0])) | 1) & _REORDER_MASK
            peer[0], peer[2] = counter, now
        else:
            behind = peer[0] - counter
            if behind >= REORDER_WINDOW or peer[1] >> behind & 1:
                self.replays += 1
                raise ProtocolError("replayed frame" if behind < REORDER_WINDOW else
                                    "frame too far behind its sender's newest")
            peer[1] |= 1 << behind
            peer[2] = now
        if now - self._pruned > REPLAY_WINDOW_S / 4:
            self._peers = {t: p for t, p in self._peers.items() if now - p[2] <= REPLAY_WINDOW_S}
            self._pruned = now


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Split a ROUTER message into (identity frames, [message frame])."""
    return frames[:-1], frames[-1:]


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
