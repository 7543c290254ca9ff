"""The wire protocol shared by hostd and sandboxes (:mod:`sandbox.protocol`)."""
from __future__ import annotations

import datetime
import hashlib
import hmac
import time

import msgpack
import numpy
import pytest

from sandbox import protocol
from sandbox.protocol import ProtocolError, Signer

pytestmark = pytest.mark.timeout(60)

KEY = bytes(range(32))


@pytest.fixture
def signer():
    return Signer(KEY)


def split(frames):
    """:returns: ``(signature, payload)`` of a packed message."""
    (frame,) = frames
    return frame[:protocol.SIGNATURE_BYTES], frame[protocol.SIGNATURE_BYTES:]


def join(signature, payload):
    """:returns: the frames of a message with this signature and payload."""
    return [signature + payload]


def test_round_trip_keeps_the_message(signer):
    message = protocol.request("call", kind="query", name="grades",
                               params={"course": "x", "n": [1, 2]})
    frames = signer.pack(dict(message))
    assert len(frames) == 1 and isinstance(frames[0], bytes)  # signature + payload, one frame
    assert signer.unpack(frames) == message  # the replay stamps are checked and removed
    assert b"_nonce" in frames[0] and b"_sent" in frames[0]


def test_numpy_values_are_converted(signer):
    message = protocol.notification("x", ints=numpy.arange(3, dtype=numpy.int64),
                                    floats=numpy.array([0.5, 1.5]),
                                    scalar=numpy.int64(7), fscalar=numpy.float64(2.25),
                                    matrix=numpy.zeros((2, 2), dtype=numpy.int64))
    decoded = signer.unpack(signer.pack(message))
    assert decoded["ints"] == [0, 1, 2]
    assert all(type(v) is int for v in decoded["ints"])
    assert decoded["floats"] == [0.5, 1.5]
    assert decoded["scalar"] == 7 and type(decoded["scalar"]) is int
    assert decoded["fscalar"] == 2.25
    assert decoded["matrix"] == [[0, 0], [0, 0]]


def test_sets_tuples_and_dates_are_converted(signer):
    when = datetime.datetime(2024, 1, 2, 3, 4, 5)
    decoded = signer.unpack(signer.pack(protocol.notification("x", s={3}, t=(1, 2), when=when)))
    assert decoded["s"] == [3]
    assert decoded["t"] == [1, 2]
    assert decoded["when"] == when.isoformat()


def test_unsendable_value_raises_type_error(signer):
    with pytest.raises(TypeError, match="object"):
        signer.pack(protocol.notification("x", value=object()))


def test_binary_and_text_stay_distinct(signer):
    decoded = signer.unpack(signer.pack(protocol.notification("x", b=b"\x00\xff", s="text")))
    assert decoded["b"] == b"\x00\xff"
    assert decoded["s"] == "text"


def test_identity_frames_before_the_message_are_ignored(signer):
    frames = [b"peer-identity"] + signer.pack(protocol.notification("ready"))
    identity, body = protocol.split_envelope(frames)
    assert identity == [b"peer-identity"]
    assert signer.unpack(body)["type"] == "ready"
    again = [b"peer-identity"] + signer.pack(protocol.notification("ready"))  # the same frame would be a replay
    assert signer.unpack(again)["type"] == "ready"


def test_tampered_payload_is_rejected(signer):
    signature, payload = split(signer.pack(protocol.notification("ready", module="a")))
    tampered = payload.replace(b"a", b"b")
    assert tampered != payload
    with pytest.raises(ProtocolError, match="signature"):
        signer.unpack(join(signature, tampered))


def test_tampered_signature_is_rejected(signer):
    signature, payload = split(signer.pack(protocol.notification("ready")))
    bad = bytes([signature[0] ^ 1]) + signature[1:]
    with pytest.raises(ProtocolError):
        signer.unpack(join(bad, payload))
    with pytest.raises(ProtocolError):
        signer.unpack(join(signature[:-1], payload))
    with pytest.raises(ProtocolError):
        signer.unpack(join(b"", payload))


@pytest.mark.parametrize("key", [KEY, b"", b"short", bytes(range(200))])
def test_signature_is_the_standard_hmac_blake2s(key):
    payload = b"any payload \x00\xff" * 7
    assert Signer(key).sign(payload) == hmac.new(key, payload, hashlib.blake2s).digest()
    assert len(Signer(key).sign(payload)) == protocol.SIGNATURE_BYTES


def test_wrong_key_is_rejected(signer):
    frames = Signer(b"another key of thirty-two bytes!").pack(protocol.notification("ready"))
    with pytest.raises(ProtocolError):
        signer.unpack(frames)


def test_wrong_version_is_rejected(signer):
    message = protocol.notification("ready")
    message["v"] = protocol.VERSION + 1
    with pytest.raises(ProtocolError, match="version"):
        signer.unpack(signer.pack(message))
    del message["v"]
    with pytest.raises(ProtocolError, match="version"):
        signer.unpack(signer.pack(message))


def test_a_signed_non_map_is_rejected(signer):
    payload = msgpack.packb([protocol.VERSION, "ready"], use_bin_type=True)
    with pytest.raises(ProtocolError):
        signer.unpack(join(signer.sign(payload), payload))


def test_signed_garbage_is_rejected(signer):
    payload = b"\xc1\xc1\xc1 not msgpack"
    with pytest.raises(ProtocolError, match="undecodable"):
        signer.unpack(join(signer.sign(payload), payload))
    truncated = split(signer.pack(protocol.notification("ready", module="abc")))[1][:-2]
    with pytest.raises(ProtocolError):
        signer.unpack(join(signer.sign(truncated), truncated))


def test_missing_or_short_frames_are_rejected(signer):
    with pytest.raises(ProtocolError, match="no frame"):
        signer.unpack([])
    with pytest.raises(ProtocolError, match="too short"):
        signer.unpack([signer.sign(b"")])
    with pytest.raises(ProtocolError):  # the payload alone, its signature lost
        signer.unpack([split(signer.pack(protocol.notification("ready")))[1]])


def test_oversized_payload_is_rejected_before_verifying(signer):
    payload = b"\x00" * (protocol.MAX_MESSAGE_BYTES + 1)
    with pytest.raises(ProtocolError, match="too large"):
        signer.unpack(join(b"\x00" * 32, payload))


def test_oversized_payload_is_rejected_even_when_signed(signer, monkeypatch):
    frames = signer.pack(protocol.notification("ready", blob=b"x" * 2000))
    assert signer.unpack(frames)["blob"] == b"x" * 2000
    monkeypatch.setattr(protocol, "MAX_MESSAGE_BYTES", 1000)
    with pytest.raises(ProtocolError, match="too large"):
        signer.unpack(frames)


def test_request_has_type_id_and_deadline():
    first = protocol.request("call", 5.0, name="x")
    second = protocol.request("call", name="y")
    assert first["type"] == "call_request" and first["v"] == protocol.VERSION
    assert first["name"] == "x"
    assert first["id"] != second["id"]
    assert "deadline" in first and "deadline" not in second
    before = time.time()
    third = protocol.request("call", 100.0)
    assert before + 99 < third["deadline"] <= time.time() + 100


def test_reply_ok_keeps_id_and_turns_request_into_reply():
    req = protocol.request("ping")
    reply = protocol.reply_ok(req, {"pid": 1})
    assert reply == {"v": protocol.VERSION, "type": "ping_reply", "id": req["id"], "ok": True,
                     "result": {"pid": 1}}


def test_reply_error_keeps_id_and_extra_fields():
    req = {"v": protocol.VERSION, "type": "x_request", "id": 41}
    reply = protocol.reply_error(req, "bad_parameter", "parameter 'n': missing", param="n")
    assert reply["type"] == "x_reply"
    assert reply["id"] == 41
    assert reply["ok"] is False
    assert reply["error"] == {"code": "bad_parameter", "message": "parameter 'n': missing",
                              "param": "n"}


def test_new_key_is_random_32_bytes():
    first, second = protocol.new_key(), protocol.new_key()
    assert len(first) == 32 and first != second


def test_a_replayed_frame_is_refused_and_counted():
    sender, receiver = protocol.Signer(b"k" * 32), protocol.Signer(b"k" * 32)
    frames = sender.pack(protocol.request("ping"))
    assert receiver.unpack(frames)["type"] == "ping_request"
    with pytest.raises(protocol.ProtocolError, match="replayed"):
        receiver.unpack(frames)
    assert receiver.replays == 1
    assert receiver.unpack(sender.pack(protocol.request("ping")))["type"] == "ping_request"


def test_a_stale_frame_is_refused(monkeypatch):
    sender, receiver = protocol.Signer(b"k" * 32), protocol.Signer(b"k" * 32)
    frames = sender.pack(protocol.request("ping"))
    real_time = protocol.time.time
    monkeypatch.setattr(protocol.time, "time", lambda: real_time() + protocol.REPLAY_WINDOW_S + 5)
    with pytest.raises(protocol.ProtocolError, match="stale"):
        receiver.unpack(frames)
    assert receiver.replays == 1


def test_frames_arriving_out_of_order_are_each_accepted_once():
    sender, receiver = protocol.Signer(b"k" * 32), protocol.Signer(b"k" * 32)
    frames = [sender.pack(protocol.request("ping")) for _ in range(5)]
    for index in (0, 3, 1, 4, 2):  # late frames within the window still pass, once
        assert receiver.unpack(frames[index])["type"] == "ping_request"
    for index in range(5):
        with pytest.raises(protocol.ProtocolError, match="replayed"):
            receiver.unpack(frames[index])
    assert receiver.replays == 5


def test_a_frame_too_far_behind_its_sender_is_refused():
    sender, receiver = protocol.Signer(b"k" * 32), protocol.Signer(b"k" * 32)
    held_back = sender.pack(protocol.request("ping"))
    for _ in range(protocol.REORDER_WINDOW):
        receiver.unpack(sender.pack(protocol.request("ping")))
    with pytest.raises(protocol.ProtocolError, match="too far behind"):
        receiver.unpack(held_back)
    assert receiver.replays == 1


def test_each_sender_is_tracked_apart():
    first, second = protocol.Signer(b"k" * 32), protocol.Signer(b"k" * 32)
    receiver = protocol.Signer(b"k" * 32)
    frames = [first.pack(protocol.request("ping")), second.pack(protocol.request("ping"))]
    for frame in frames:  # both carry counter 1, from different senders
        assert receiver.unpack(frame)["type"] == "ping_request"


def test_receiver_memory_does_not_grow_with_traffic_and_silent_senders_are_forgotten(monkeypatch):
    senders = [protocol.Signer(b"k" * 32) for _ in range(3)]
    receiver = protocol.Signer(b"k" * 32)
    for _ in range(3000):
        for sender in senders:
            receiver.unpack(sender.pack(protocol.request("ping")))
    assert len(receiver._peers) == 3
    assert all(peer[1].bit_length() <= protocol.REORDER_WINDOW for peer in receiver._peers.values())
    real_time = protocol.time.time
    later = real_time() + protocol.REPLAY_WINDOW_S + 1
    monkeypatch.setattr(protocol.time, "time", lambda: later)
    fresh = protocol.Signer(b"k" * 32)
    receiver.unpack(fresh.pack(protocol.request("ping")))
    assert list(receiver._peers) == [fresh._token]


def test_a_malformed_nonce_is_refused():
    sender, receiver = protocol.Signer(b"k" * 32), protocol.Signer(b"k" * 32)
    for nonce in ("abc1", ["abc", 0], ["abc"], [1, 2], ["abc", "1"]):
        payload = msgpack.packb({**protocol.request("ping"), "_nonce": nonce, "_sent": time.time()},
                                use_bin_type=True)
        with pytest.raises(protocol.ProtocolError, match="unstamped"):
            receiver.unpack([sender.sign(payload) + payload])
    assert receiver.replays == 5
