"""The broker: hostd's end of every sandbox's upcall channel.

One thread, one ZeroMQ poll loop, never blocking on a sandbox:

* ``ready`` / ``load_failed`` / ``error_report`` notifications go to the host.
* ``call_request`` (``query.other(...)`` in a sandbox) is forwarded to the
  sandbox serving that name and its reply routed back; cross-module calls
  always pass here, never through an import.
* ``emit_request`` is forwarded to the ingest thread as an append from
  ``module:<name>``.

It also serves the control socket that web workers use (signed with the
control key): ``status_request`` (the ``/modules`` answer),
``stored_events_request`` (logged events by identity), ``realtime_wait_request`` (answered once the given realtime handlers are past a
log position, or with a timeout error at the deadline), ``dead_letters_request``
and ``dead_letters_retry_request``, and ``timeout_report`` (a call overran its
deadline: the sandbox is killed and restarted). Delivery threads wake the loop
through an inproc socket whenever a realtime handler moved on.

Sandboxes connect a DEALER whose routing id is their module name, so the broker
knows whose key verifies a message; a restarted sandbox takes the id over.
"""
from __future__ import annotations

import logging
import os
import threading
import time

import zmq

from sandbox import protocol
from sandbox.errors import InsightsError

__all__ = ["Broker"]

log = logging.getLogger("insights.broker")
_PROGRESS_ENDPOINT = "inproc://insights-progress"


class Broker(threading.Thread):
    """The upcall broker thread.

    :param host: the :class:`hostd.host.Host` (module records, notifications).
    :param context: the host's ``zmq.Context``.
    """

    def __init__(self, host, context: zmq.Context):
        super().__init__(name="insights-broker", daemon=True)
        self._host = host
        self._context = context
        self._stopping = threading.Event()
        self._pending: dict = {}   # forwarded id -> (sandbox identity, original request, signer)
        self._targets: dict = {}   # module name -> (key, DEALER, Signer)
        self.dropped = 0
        self._waiters: list = []   # (identity, request, handlers, seq, deadline)
        self._binds: list = []     # (endpoint, uid, threading.Event): upcall sockets to bind
        self._bound_endpoints: set = set()
        self._bound = threading.Event()

    def wait_bound(self, timeout: float = 10.0) -> None:
        """Block until the upcall socket is bound."""
        if not self._bound.wait(timeout):
            raise RuntimeError("broker did not start")

    def stop(self) -> None:
        """Ask the loop to end (it closes its sockets itself)."""
        self._stopping.set()

    def ensure_upcall(self, module: str, endpoint: str, uid: int | None, timeout_s: float = 10.0) -> None:
        """Have the upcall socket also listen at a module's own ``endpoint`` (owned by ``uid``).

        :raises RuntimeError: the broker did not bind it in time.
        """
        done = threading.Event()
        self._binds.append((endpoint, uid, done))
        self._wake_up()
        if not done.wait(timeout_s):
            raise RuntimeError(f"broker did not bind the upcall socket of {module}")

    def _wake_up(self) -> None:
        notify = getattr(self, "_waker", None)
        if notify is None:
            notify = self._waker = self.progress_notifier()
        notify()

    def _bind_pending(self) -> None:
        while self._binds:
            endpoint, uid, done = self._binds.pop(0)
            if endpoint not in self._bound_endpoints:
                path = endpoint[len("ipc://"):]
                if os.path.exists(path):
                    os.unlink(path)
                self._upcalls.bind(endpoint)
                self._bound_endpoints.add(endpoint)
                os.chmod(path, 0o600)
                if uid is not None:
                    os.chown(path, uid, uid)
            done.set()

    def progress_notifier(self):
        """:returns: a function any thread may call when a realtime handler moved on."""
        local = threading.local()

        def notify():
            sock = getattr(local, "sock", None)
            if sock is None:
                sock = local.sock = self._context.socket(zmq.PUSH)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.SNDHWM, 10)
                sock.connect(_PROGRESS_ENDPOINT)
            try:
                sock.send(b"", zmq.NOBLOCK)
            except zmq.Again:
                pass  # the broker has wake-ups queued already
        return notify

    # -- sockets -------------------------------------------------------------
    def _target_socket(self, record: dict):
        key = bytes.fromhex(record["key"])
        entry = self._targets.get(record["name"])
        if entry is None or entry[0] != (key, record["call_endpoint"]):
            if entry is not None:
                self._poller.unregister(entry[1])
                entry[1].close(0)
            sock = self._context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(record["call_endpoint"])
            self._poller.register(sock, zmq.POLLIN)
            entry = ((key, record["call_endpoint"]), sock, protocol.Signer(key))
            self._targets[record["name"]] = entry
        return entry[1], entry[2]

    def run(self) -> None:
        self._upcalls = self._context.socket(zmq.ROUTER)
        self._upcalls.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self._upcalls.setsockopt(zmq.LINGER, 0)
        self._ingest = self._context.socket(zmq.DEALER)
        self._ingest.setsockopt(zmq.LINGER, 0)
        self._ingest.connect(self._host.paths.ingest_endpoint)
        self._ingest_signer = protocol.Signer(self._host.control_key)
        self._control = self._context.socket(zmq.ROUTER)
        self._control.setsockopt(zmq.LINGER, 0)
        self._control.bind(self._host.paths.control_endpoint)
        self._control_signer = protocol.Signer(self._host.control_key)
        self._progress = self._context.socket(zmq.PULL)
        self._progress.setsockopt(zmq.LINGER, 0)
        self._progress.bind(_PROGRESS_ENDPOINT)
        self._poller = zmq.Poller()
        self._poller.register(self._upcalls, zmq.POLLIN)
        self._poller.register(self._control, zmq.POLLIN)
        self._poller.register(self._progress, zmq.POLLIN)
        self._poller.register(self._ingest, zmq.POLLIN)
        self._bound.set()
        try:
            while not self._stopping.is_set():
                for sock, _ in self._poller.poll(self._poll_timeout_ms()):
                    try:
                        if sock is self._upcalls:
                            self._on_upcall(sock.recv_multipart())
                        elif sock is self._control:
                            self._on_control(sock.recv_multipart())
                        elif sock is self._progress:
                            while sock.poll(0):
                                sock.recv()
                            self._bind_pending()
                            self._check_waiters()
                        else:
                            self._on_reply(sock)
                    except Exception:  # the loop never dies of its input
                        log.exception("broker: error handling a message")
                self._expire()
                self._check_waiters()
        finally:
            self._progress.close(0)
            for _, sock, _ in self._targets.values():
                sock.close(0)
            self._upcalls.close(0)
            self._control.close(0)
            self._ingest.close(0)

    # -- messages from sandboxes ---------------------------------------------
    def _on_upcall(self, frames: list[bytes]) -> None:
        identity, body = protocol.split_envelope(frames)
        module = identity[0].decode("utf-8", "replace") if identity else ""
        supervisor = self._host.supervisor(module)
        if supervisor is None:
            self.dropped += 1
            return
        signer = supervisor.signer
        try:
            message = signer.unpack(body)
        except protocol.ProtocolError as err:
            self.dropped += 1
            log.warning("broker: dropped a message claiming to be from %r: %s", module, err)
            return
        kind = message.get("type")
        if kind == "ready":
            self._host.on_ready(module, message.get("pid"), message.get("endpoints") or [],
                                message.get("manifest") or {}, message.get("confinement") or {},
                                message.get("cpu"))
        elif kind == "load_failed":
            supervisor.on_load_failed(message.get("traceback") or "")
        elif kind == "error_report":
            log.error("module %s: %s raised:\n%s", module, message.get("endpoint"), message.get("traceback"))
            supervisor.on_error(message.get("traceback") or "")
        elif kind == "call_request":
            self._forward_call(identity, message, signer)
        elif kind == "emit_request":
            self._forward_emit(identity, message, signer, module)
        else:
            self.dropped += 1

    def _on_control(self, frames: list[bytes]) -> None:
        identity, body = protocol.split_envelope(frames)
        try:
            message = self._control_signer.unpack(body)
        except protocol.ProtocolError as err:
            self.dropped += 1
            log.warning("broker: dropped a control message: %s", err)
            return
        kind = message.get("type")
        if kind == "status_request":
            self._control_reply(identity, protocol.reply_ok(message, self._host.module_status()))
        elif kind == "realtime_wait_request":
            self._waiters.append((identity, message, [tuple(h) for h in message.get("handlers") or []],
                                  message.get("seq") or 0, message.get("deadline") or time.time()))
            self._check_waiters()
        elif kind == "stored_events_request":
            ids = [str(i) for i in (message.get("ids") or [])][:1000]
            self._control_reply(identity, protocol.reply_ok(message, self._host.eventlog.events_by_id(ids)))
        elif kind in ("dead_letters_request", "dead_letters_retry_request"):
            self._control_reply(identity, self._dead_letters(message))
        elif kind == "timeout_report":
            supervisor = self._host.supervisor(message.get("module", ""))
            if supervisor is not None and supervisor.pid == message.get("pid"):
                supervisor.kill_for_timeout(message.get("reason") or "a call timed out")
        else:
            self.dropped += 1

    def _control_reply(self, identity, reply: dict) -> None:
        self._control.send_multipart(identity + self._control_signer.pack(reply))

    def _dead_letters(self, message) -> dict:
        module = message.get("module")
        if not isinstance(module, str) or self._host.supervisor(module) is None:
            return protocol.reply_error(message, "not_found", f"no module named {module!r}")
        if message["type"] == "dead_letters_retry_request":
            count = self._host.dead_letters.request_retry(module)
            self._host.delivery.notify(0)
            self._host.realtime.notify(0)
            return protocol.reply_ok(message, {"retrying": count})
        return protocol.reply_ok(message, self._host.dead_letters.list(module))

    def _check_waiters(self) -> None:
        """Answer realtime waits whose handlers are all past their position, or expired."""
        if not self._waiters:
            return
        now, waiting = time.time(), []
        for identity, message, handlers, seq, deadline in self._waiters:
            done = all((self._host.handler_position(m, h) or 0) >= seq for m, h in handlers)
            if done:
                self._control_reply(identity, protocol.reply_ok(message, {"seq": seq}))
            elif deadline <= now:
                late = [f"{m}.{h}" for m, h in handlers if (self._host.handler_position(m, h) or 0) < seq]
                self._control_reply(identity, protocol.reply_error(
                    message, "timeout", f"realtime handlers did not finish in time: {', '.join(late)}"))
            else:
                waiting.append((identity, message, handlers, seq, deadline))
        self._waiters = waiting

    def _poll_timeout_ms(self) -> int:
        if not self._waiters:
            return 200
        soonest = min(w[4] for w in self._waiters)
        return max(1, min(200, int((soonest - time.time()) * 1000) + 1))

    def _answer(self, identity, signer, reply: dict) -> None:
        self._upcalls.send_multipart(identity + signer.pack(reply))

    def _forward_call(self, identity, message, signer) -> None:
        try:
            record, endpoint = self._host.snapshot().resolve(message.get("kind"), message.get("name"))
        except InsightsError as err:
            self._answer(identity, signer, protocol.reply_error(message, **err.to_reply_fields()))
            return
        sock, target_signer = self._target_socket(record)
        deadline = min(message.get("deadline") or float("inf"),
                       time.time() + record["limits"]["call_timeout_s"])
        forwarded = protocol.request("call", None, kind=endpoint["class"], name=message["name"],
                                     params=message.get("params") or {})
        forwarded["deadline"] = deadline
        self._pending[(id(sock), forwarded["id"])] = (identity, message, signer, deadline)
        sock.send_multipart(target_signer.pack(forwarded))

    def _forward_emit(self, identity, message, signer, module) -> None:
        events = message.get("events")
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            self._answer(identity, signer, protocol.reply_error(message, "bad_parameter",
                                                               "emit() takes event dicts", param="event"))
            return
        forwarded = protocol.request("append", 30.0, events=events, source=f"module:{module}")
        self._pending[(id(self._ingest), forwarded["id"])] = (identity, message, signer, forwarded["deadline"])
        self._ingest.send_multipart(self._ingest_signer.pack(forwarded))

    # -- replies from sandboxes and the ingest thread ------------------------
    def _on_reply(self, sock) -> None:
        frames = sock.recv_multipart()
        if sock is self._ingest:
            signer = self._ingest_signer
        else:
            signer = next((s for _, k, s in self._targets.values() if k is sock), None)
        try:
            reply = signer.unpack(frames)
        except (protocol.ProtocolError, AttributeError):
            self.dropped += 1
            return
        pending = self._pending.pop((id(sock), reply.get("id")), None)
        if pending is None:
            return  # the caller gave up already
        identity, original, original_signer, _ = pending
        if reply.get("ok"):
            result = reply.get("result")
            if sock is self._ingest:
                result = result.get("ids")
            answer = protocol.reply_ok(original, result)
        else:
            answer = protocol.reply_error(original, **(reply.get("error") or {"code": "internal",
                                                                              "message": "?"}))
        self._answer(identity, original_signer, answer)

    def _expire(self) -> None:
        now = time.time()
        for key in [k for k, v in self._pending.items() if v[3] < now]:
            del self._pending[key]
