"""The broker: hostd's end of every sandbox's upcall channel, and of the control socket.

One thread, one ZeroMQ poll loop, two dispatch tables from message type to
method, and nothing on it that waits for the store or a sandbox:

Upcalls (from sandboxes, verified with the module's own key):

* ``ready`` / ``load_failed`` / ``error_report`` are queued to the module's
  supervisor as signals (``report(module, signal)``).
* ``call_request`` (``query.other(...)`` in a sandbox) is forwarded to the
  sandbox serving that name and its reply routed back; cross-module calls
  always pass here, never through an import. A name no module of this node
  has goes to the peers (``remote``, see :mod:`hostd.federation`), over HTTP
  on a pool of threads of its own.
* ``emit_request`` is forwarded to the ingest thread as an append from
  ``module:<name>``.

Control requests (from web workers, signed with the control key) are served
by the host's functions given in ``control``: those marked blocking (reads of
the store, such as ``stored_events`` or ``dead_letters``) run on a small pool
of threads and their answers are sent when ready; the others (``status``,
answered from memory, and ``timeout_report``) run on the loop.

Sandboxes connect a DEALER whose routing id is their module name, so the broker
knows whose key verifies a message; a restarted sandbox takes the id over.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple

import pymongo.errors
import zmq

from sandbox import protocol
from sandbox.errors import BadParameter, EndpointNotFound, InsightsError, StoreUnavailable

from .eventbody import check_event
from .supervisor import LoadFailed, Raised, Ready
from .waker import Waker

__all__ = ["Broker", "ControlVerb"]

log = logging.getLogger("insights.broker")
_CONTROL_THREADS = 2
_REMOTE_THREADS = 4  # calls to peers in flight at once; more wait their turn


class ControlVerb(NamedTuple):
    """How the broker serves one control request type.

    ``function(message) -> result`` (raising :class:`~sandbox.errors.InsightsError` for an
    error reply); ``blocking`` ones run off the routing thread; a ``notification`` gets no reply.
    """

    function: Callable
    blocking: bool = False
    notification: bool = False


class _Pending(NamedTuple):
    """A forwarded message whose reply goes back to a sandbox."""

    identity: list
    request: dict
    signer: protocol.Signer
    deadline: float


class Broker(threading.Thread):
    """The upcall and control broker thread.

    :param context: the host's ``zmq.Context``.
    :param paths: the host's :class:`~hostd.paths.HostPaths` (control and ingest endpoints).
    :param control_key: the key control messages and appends are signed with.
    :param signer_of: ``signer_of(module) -> Signer | None``: the module's upcall signer.
    :param report: ``report(module, signal)``: queue a sandbox's report to its supervisor.
    :param resolve: ``resolve(kind, name) -> (record, endpoint)``, raising
        :class:`~sandbox.errors.InsightsError` for names that cannot be called.
    :param control: ``{verb: ControlVerb}`` served on the control socket.
    :param remote: ``remote(kind, name, params, timeout_s) -> result`` calling a name no module
        here has on another node, raising :class:`~sandbox.errors.InsightsError` (``None``: no peers).
    """

    def __init__(self, context: zmq.Context, paths, control_key: bytes, signer_of, report, resolve,
                 control: dict, remote=None):
        super().__init__(name="insights-broker", daemon=True)
        self._context = context
        self._paths = paths
        self._control_key = control_key
        self._signer_of = signer_of
        self._report = report
        self._resolve = resolve
        self._control_verbs = {f"{verb}_request" if not spec.notification else verb: spec
                               for verb, spec in control.items()}
        self._stopping = threading.Event()
        self._waker = Waker(context, "broker")
        self._pool = ThreadPoolExecutor(_CONTROL_THREADS, thread_name_prefix="insights-control")
        self._finished: queue.SimpleQueue = queue.SimpleQueue()   # (identity, reply) from the pool
        self._remote = remote
        self._remote_pool = None if remote is None else ThreadPoolExecutor(_REMOTE_THREADS,
                                                                           thread_name_prefix="insights-remote")
        self._remote_answers: queue.SimpleQueue = queue.SimpleQueue()  # (identity, signer, reply)
        self._binds: queue.SimpleQueue = queue.SimpleQueue()      # (endpoint, uid, threading.Event)
        self._bound_endpoints: set = set()
        self._pending: dict = {}   # (id(socket), forwarded id) -> _Pending
        self._targets: dict = {}   # module name -> ((key, endpoint), DEALER, Signer)
        self._bound = threading.Event()
        self.dropped = 0
        self._upcalls = self._control = self._ingest = self._poller = None
        self._ingest_signer = protocol.Signer(control_key)
        self._control_signer = protocol.Signer(control_key)
        self._upcall_dispatch = {"ready": self._on_ready, "load_failed": self._on_load_failed,
                                 "error_report": self._on_error_report, "call_request": self._forward_call,
                                 "emit_request": self._forward_emit}

    def wait_bound(self, timeout: float = 10.0) -> None:
        """Block until the sockets are bound."""
        if not self._bound.wait(timeout):
            raise RuntimeError("broker did not start")

    def stop(self) -> None:
        """Ask the loop to end (it closes its sockets itself)."""
        self._stopping.set()
        self._waker.wake()

    def ensure_upcall(self, module: str, endpoint: str, uid: int | None, timeout_s: float = 10.0) -> None:
        """Have the upcall socket also listen at a module's own ``endpoint`` (owned by ``uid``).

        :raises RuntimeError: the broker did not bind it in time.
        """
        done = threading.Event()
        self._binds.put((endpoint, uid, done))
        self._waker.wake()
        if not done.wait(timeout_s):
            raise RuntimeError(f"broker did not bind the upcall socket of {module}")

    # -- the loop ------------------------------------------------------------
    def run(self) -> None:
        self._upcalls = self._context.socket(zmq.ROUTER)
        self._upcalls.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self._upcalls.setsockopt(zmq.LINGER, 0)
        self._ingest = self._context.socket(zmq.DEALER)
        self._ingest.setsockopt(zmq.LINGER, 0)
        self._ingest.connect(self._paths.ingest_endpoint)
        self._control = self._context.socket(zmq.ROUTER)
        self._control.setsockopt(zmq.LINGER, 0)
        self._control.bind(self._paths.control_endpoint)
        self._poller = zmq.Poller()
        for sock in (self._upcalls, self._control, self._waker.socket, self._ingest):
            self._poller.register(sock, zmq.POLLIN)
        readers = {self._upcalls: self._on_upcall, self._control: self._on_control,
                   self._waker.socket: lambda _sock: self._waker.drain()}
        self._bound.set()
        try:
            while not self._stopping.is_set():
                for sock, _ in self._poller.poll(200):
                    try:
                        readers.get(sock, self._on_reply)(sock)
                    except Exception:  # the loop never dies of its input
                        log.exception("broker: error handling a message")
                self._bind_pending()
                self._send_finished()
                self._expire()
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
            if self._remote_pool is not None:
                self._remote_pool.shutdown(wait=False, cancel_futures=True)
            for _, sock, _ in self._targets.values():
                sock.close(0)
            for sock in (self._upcalls, self._control, self._ingest):
                sock.close(0)
            self._waker.close()

    def _bind_pending(self) -> None:
        while True:
            try:
                endpoint, uid, done = self._binds.get_nowait()
            except queue.Empty:
                return
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

    def _expire(self) -> None:
        now = time.time()
        for key in [k for k, v in self._pending.items() if v.deadline < now]:
            del self._pending[key]

    # -- upcalls from sandboxes ------------------------------------------------
    def _on_upcall(self, sock) -> None:
        identity, body = protocol.split_envelope(sock.recv_multipart())
        module = identity[0].decode("utf-8", "replace") if identity else ""
        signer = self._signer_of(module)
        if signer is None:
            self.dropped += 1
            return
        try:
            message = signer.unpack(body)
        except protocol.ProtocolError as err:
            self.dropped += 1
            log.warning("broker: dropped a message claiming to be from %r: %s", module, err)
            return
        handler = self._upcall_dispatch.get(message.get("type"))
        if handler is None:
            self.dropped += 1
            return
        handler(module, identity, message, signer)

    def _on_ready(self, module, identity, message, signer) -> None:
        self._report(module, Ready(message.get("pid"), message.get("endpoints") or [],
                                   message.get("manifest") or {}, message.get("confinement") or {},
                                   message.get("cpu")))

    def _on_load_failed(self, module, identity, message, signer) -> None:
        self._report(module, LoadFailed(message.get("traceback") or ""))

    def _on_error_report(self, module, identity, message, signer) -> None:
        log.error("module %s: %s raised:\n%s", module, message.get("endpoint"), message.get("traceback"))
        self._report(module, Raised(message.get("traceback") or ""))

    def _answer(self, identity, signer, reply: dict) -> None:
        self._upcalls.send_multipart(identity + signer.pack(reply))

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

    def _forward_call(self, module, identity, message, signer) -> None:
        try:
            record, endpoint = self._resolve(message.get("kind"), message.get("name"))
        except EndpointNotFound as err:
            if self._remote is None:
                self._answer(identity, signer, protocol.reply_error(message, **err.to_reply_fields()))
            else:
                self._remote_pool.submit(self._call_remote, identity, message, signer, err)
            return
        except InsightsError as err:
            self._answer(identity, signer, protocol.reply_error(message, **err.to_reply_fields()))
            return
        sock, target_signer = self._target_socket(record)
        deadline = min(message.get("deadline") or float("inf"),
                       time.time() + record["limits"]["call_timeout_s"])
        forwarded = protocol.request("call", None, kind=endpoint["class"], name=message["name"],
                                     params=message.get("params") or {})
        forwarded["deadline"] = deadline
        self._pending[(id(sock), forwarded["id"])] = _Pending(identity, message, signer, deadline)
        sock.send_multipart(target_signer.pack(forwarded))

    def _call_remote(self, identity, message, signer, not_here: EndpointNotFound) -> None:
        """On the remote pool: call a name on the peers; the loop sends the reply."""
        timeout_s = (message.get("deadline") or time.time() + 30.0) - time.time()
        try:
            if timeout_s <= 0:
                raise not_here  # the caller gave up already; it will not read the answer
            result = self._remote(message.get("kind"), message.get("name"), message.get("params") or {}, timeout_s)
            reply = protocol.reply_ok(message, result)
        except EndpointNotFound:
            reply = protocol.reply_error(message, **not_here.to_reply_fields())
        except InsightsError as err:
            reply = protocol.reply_error(message, **err.to_reply_fields())
        except Exception as err:
            log.exception("broker: calling %s %r on a peer failed", message.get("kind"), message.get("name"))
            reply = protocol.reply_error(message, "internal", f"calling a peer failed: {type(err).__name__}")
        self._remote_answers.put((identity, signer, reply))
        self._waker.wake()

    def _forward_emit(self, module, identity, message, signer) -> None:
        events = message.get("events")
        try:
            if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
                raise BadParameter("event", "emit() takes event dicts")
            for index, event in enumerate(events):  # what the store cannot keep, as for POST /event
                check_event(event, index)
        except InsightsError as err:
            self._answer(identity, signer, protocol.reply_error(message, "bad_parameter", str(err), param="event"))
            return
        forwarded = protocol.request("append", 30.0, events=events, source=f"module:{module}")
        self._pending[(id(self._ingest), forwarded["id"])] = _Pending(identity, message, signer,
                                                                     forwarded["deadline"])
        self._ingest.send_multipart(self._ingest_signer.pack(forwarded))

    def _on_reply(self, sock) -> None:
        """A reply from a sandbox a call was forwarded to, or from the ingest thread."""
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
        if reply.get("ok"):
            result = reply.get("result")
            answer = protocol.reply_ok(pending.request, result.get("ids") if sock is self._ingest else result)
        else:
            answer = protocol.reply_error(pending.request, **(reply.get("error") or {"code": "internal",
                                                                                     "message": "?"}))
        self._answer(pending.identity, pending.signer, answer)

    # -- control requests from web workers ---------------------------------------
    def _on_control(self, sock) -> None:
        identity, body = protocol.split_envelope(sock.recv_multipart())
        try:
            message = self._control_signer.unpack(body)
        except protocol.ProtocolError as err:
            self.dropped += 1
            log.warning("broker: dropped a control message: %s", err)
            return
        verb = self._control_verbs.get(message.get("type"))
        if verb is None:
            self.dropped += 1
        elif verb.blocking:
            self._pool.submit(self._serve_off_loop, verb, identity, message)
        else:
            reply = self._serve(verb, message)
            if reply is not None:
                self._control.send_multipart(identity + self._control_signer.pack(reply))

    @staticmethod
    def _serve(verb: ControlVerb, message: dict) -> dict | None:
        try:
            result = verb.function(message)
        except InsightsError as err:
            return None if verb.notification else protocol.reply_error(message, **err.to_reply_fields())
        except pymongo.errors.PyMongoError:
            log.exception("broker: %s failed: the store", message.get("type"))
            return None if verb.notification else protocol.reply_error(
                message, **StoreUnavailable("the store is unavailable").to_reply_fields())
        except Exception as err:
            log.exception("broker: %s failed", message.get("type"))
            return None if verb.notification else protocol.reply_error(
                message, "internal", f"{message.get('type')} failed: {type(err).__name__}")
        return None if verb.notification else protocol.reply_ok(message, result)

    def _serve_off_loop(self, verb: ControlVerb, identity, message) -> None:
        reply = self._serve(verb, message)
        if reply is not None:
            self._finished.put((identity, reply))
            self._waker.wake()

    def _send_finished(self) -> None:
        """Send what the pools finished: control replies, then replies of calls to peers."""
        while True:
            try:
                identity, reply = self._finished.get_nowait()
            except queue.Empty:
                break
            self._control.send_multipart(identity + self._control_signer.pack(reply))
        while True:
            try:
                identity, signer, reply = self._remote_answers.get_nowait()
            except queue.Empty:
                return
            self._answer(identity, signer, reply)
