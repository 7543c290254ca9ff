"""The sandbox process: one module, served over ZeroMQ.

Started as ``python -m sandbox SPEC_FILE`` by hostd (or the harness). The spec
file (JSON, mode 0600) carries the module's folder, the ipc endpoints, the
channel key, the store URL and the file store's folder, key, backend
(``fs_backend``) and quota (``fs_mb``); the key never appears in argv or the
environment.

Life of a sandbox: read the spec; connect to hostd's upcall socket; load the
module (on failure: send ``load_failed`` with the traceback and exit with
:data:`~sandbox.protocol.EXIT_LOAD_FAILED`); bind the call socket; send
``ready`` with the endpoint descriptions; then serve requests until SIGTERM or
until hostd disappears. A message that fails to verify is logged and dropped; a
module exception becomes an error reply and the loop goes on.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
import time
import traceback

import zmq

from . import confine, memoize, protocol, rendering
from .cache import COLLECTION, Cache, CacheStore
from .errors import BadParameter, CacheMiss, EndpointNotFound, ModuleTimeout
from .events import Event
from .filestore import BaseFileStore, open_file_store
from .injection import bind
from .loader import load_module
from .filters import compile_filter, filter_paths
from .layers import LayeredRegistry
from .transport import new_context
from .upcalls import EndpointProxy, Upcaller

__all__ = ["ModuleRuntime", "run", "main"]

log = logging.getLogger("insights.sandbox")


class ModuleRuntime:
    """Calls a loaded module's endpoints with their injected services.

    :param loaded: the :class:`~sandbox.loader.LoadedModule`.
    :param spec: the sandbox spec (store URL, fs root and key...).
    :param upcaller: the :class:`~sandbox.upcalls.Upcaller` (proxies, emit, error reports).
    :param properties: the :class:`~sandbox.properties.PropertyRegistry` events resolve through.
    :param wait: ``wait(seconds)``, how a memoized call waiting for another process's
        computation passes the time (the server serves other calls meanwhile).
    """

    def __init__(self, loaded, spec: dict, upcaller: Upcaller, properties=None, wait=time.sleep):
        self.loaded = loaded
        self.properties = properties
        #: ``{handler: predicate}`` of handlers whose filter names event properties: hostd
        #: decided the raw clauses, these are checked here before the handler is called
        self.property_filters = {}
        for endpoint in loaded.endpoints.values() if properties is not None else ():
            whole = endpoint.spec.options.get("filter") if endpoint.spec.kind == "handler" else None
            if whole and any(properties.property_prefix(p) for p in filter_paths(whole)):
                self.property_filters[endpoint.name] = compile_filter(whole, loaded.name, properties)
        self._spec = spec
        self._upcaller = upcaller
        self._db = None
        self._fs = None
        self._cache_store = None
        #: the module's memoized results (installed for module code by :func:`sandbox.memoize.use`)
        self.memos = memoize.Memos(lambda: self.cache_store, self.service, sleep=wait,
                                   instance=spec.get("call_endpoint", ""))
        self.log = logging.getLogger(f"insights.module.{loaded.name}")
        self.query = EndpointProxy(upcaller, "query", self.call_local, loaded.describe)
        self.view = EndpointProxy(upcaller, "view", self.call_local, loaded.describe)

    # -- injected services ---------------------------------------------------
    @property
    def db(self):
        """The module's own database, connected on first use."""
        if self._db is None:
            import pymongo  # imported here: modules that never use the store do not pay for it
            client = pymongo.MongoClient(self._spec["store_url"], serverSelectionTimeoutMS=10000,
                                         connect=False)
            self._db = client[self._spec["db_name"]]
        return self._db

    @property
    def fs(self) -> BaseFileStore:
        """The module's file store: spec ``fs_backend`` (default local), quota ``fs_mb`` (default none)."""
        if self._fs is None:
            backend = self._spec.get("fs_backend", "local")
            self._fs = open_file_store(backend, self.loaded.name, bytes.fromhex(self._spec["fs_key"]),
                                       root=self._spec["fs_root"],
                                       database=self.db if backend == "gridfs" else None,
                                       limit_mb=self._spec.get("fs_mb"))
        return self._fs

    @property
    def cache_store(self) -> CacheStore:
        """Cache entries in the module's database (shared by ``cache`` and memoized functions)."""
        if self._cache_store is None:
            self._cache_store = CacheStore(self.db[COLLECTION])
        return self._cache_store

    @property
    def cache(self) -> Cache:
        """The module's cache, kept in its database."""
        return Cache(self.cache_store)

    def emit(self, event) -> list:
        """Put new events (a dict or a list of dicts) into the stream.

        :returns: the identities of the events.
        """
        events = event if isinstance(event, list) else [event]
        if not all(isinstance(e, dict) for e in events):
            raise TypeError("emit() takes an event dict or a list of them")
        return self._upcaller.call("emit", events=events)

    def service(self, name: str):
        """:returns: the injected object called ``name``."""
        if name == "emit":
            return self.emit
        return getattr(self, name)

    # -- calls ---------------------------------------------------------------
    def call_local(self, kind: str, name: str):
        """:returns: a function calling this module's own endpoint without a round trip
            (used by the proxies), or ``None`` when this module has no such endpoint."""
        endpoint = self.loaded.endpoint(kind, name)
        if endpoint is None:
            return None
        return lambda **params: self.prepare(endpoint, params)()

    def prepare(self, endpoint, params: dict, events=None):
        """Convert the parameters and gather the injected services of one call.

        :returns: a function running the call.
        :raises BadParameter: a request parameter is missing or unconvertible.
        """
        def services(service_name):
            if service_name == "events":
                return events or []
            return self.service(service_name)
        kwargs = bind(endpoint.signature, params, services)
        if isinstance(endpoint.func, memoize.MemoizedQuery):
            # A cron job on a memoized function refreshes its result; other calls may reuse it.
            call = functools.partial(endpoint.func.call_bound, kwargs, force=endpoint.spec.kind == "cron")
        else:
            call = functools.partial(endpoint.func, **kwargs)

        def run():
            result = call()
            if endpoint.spec.kind == "view" and not isinstance(result, str):
                raise TypeError(f"view {endpoint.name!r} returned {type(result).__name__}, not str")
            return None if endpoint.spec.kind == "handler" else result
        return run

    def prepare_message(self, message: dict):
        """Resolve and bind a ``call_request``; errors here are the caller's (404/400).

        :returns: a function running the call; whatever it raises is the module's fault.
        """
        kind, name = message.get("kind"), message.get("name")
        endpoint = self.loaded.endpoint(kind, name) if isinstance(kind, str) and isinstance(name, str) else None
        if endpoint is None:
            raise EndpointNotFound(f"module {self.loaded.name!r} has no {kind} {name!r}")
        params = message.get("params") or {}
        if not isinstance(params, dict):
            raise BadParameter("params", "must be a map of parameter names to values")
        if kind != "handler":
            return self.prepare(endpoint, params)
        items = [item for item in message.get("events", []) if isinstance(item, dict)]
        events = [Event(item.get("event", {}), item.get("meta"), self.properties) for item in items]
        skipped = []
        check = self.property_filters.get(endpoint.name)
        if check is not None:  # the properties it computes stay cached on the events the handler gets
            kept = []
            for event in events:
                doc = {"event": event.event, "source": event.meta.get("source"), "seq": event.meta.get("seq"),
                       "evt": event}
                (kept if check(doc) else skipped).append(event)
            events, skipped = kept, [event.meta.get("seq") for event in skipped]
        run = self.prepare(endpoint, params, events) if events else (lambda: None)

        def run_and_tell():
            run()
            return {"skipped": skipped} if skipped else None
        return run_and_tell


class _Server:
    """The request loop: a dispatch table over verified messages."""

    def __init__(self, spec: dict, context: zmq.Context):
        self.spec = spec
        self.signer = protocol.Signer(bytes.fromhex(spec["key"]))
        self.upcall_socket = context.socket(zmq.DEALER)
        self.upcall_socket.setsockopt(zmq.LINGER, 2000)
        self.upcall_socket.setsockopt(zmq.ROUTING_ID, spec["module"].encode())
        self.upcall_socket.connect(spec["upcall_endpoint"])
        self.call_socket = context.socket(zmq.ROUTER)
        self.call_socket.setsockopt(zmq.LINGER, 0)
        self.upcaller = Upcaller(self.upcall_socket, self.signer, self.call_socket, self.serve_one,
                                 spec.get("call_timeout_s", 30.0))
        self.runtime = None
        self.dropped = 0
        self.stopping = False
        self.dispatch = {"call_request": self._on_call, "ping_request": self._on_ping}

    def _on_ping(self, message):
        return protocol.reply_ok(message, {"pid": os.getpid()})

    def _on_call(self, message):
        deadline = message.get("deadline")
        if isinstance(deadline, (int, float)) and deadline < time.time():
            return protocol.reply_error(message, ModuleTimeout.code, "deadline passed before the call started")
        try:
            run = self.runtime.prepare_message(message)
        except (BadParameter, EndpointNotFound) as err:
            return protocol.reply_error(message, **err.to_reply_fields())
        except Exception as err:  # e.g. an event a property cannot read: answered, never dropped
            return self._module_raised(message, err)
        try:
            return protocol.reply_ok(message, run())
        except CacheMiss as err:  # a result not computed yet: not a bug of the module
            return protocol.reply_error(message, **err.to_reply_fields())
        except BadParameter as err:
            if getattr(err, "nested", False):  # a nested call's bad parameter is the module's bug
                return self._module_raised(message, err)
            return protocol.reply_error(message, **err.to_reply_fields())
        except Exception as err:  # includes a failed nested call: the module's error, not the caller's
            return self._module_raised(message, err)

    def _module_raised(self, message, err):
        text = traceback.format_exc()
        where = f"{message.get('kind')} {message.get('name')}"
        log.error("module %s: %s raised\n%s", self.spec["module"], where, text)
        self.upcaller.notify("error_report", module=self.spec["module"], endpoint=where, traceback=text)
        # the traceback travels for hostd's own records (dead letters); callers get the message only
        return protocol.reply_error(message, "module_error",
                                    f"{where} of module {self.spec['module']!r} raised {type(err).__name__}",
                                    traceback=text)

    def serve_one(self, block: bool = False) -> bool:
        """Receive, verify and answer one request (never raises for bad input).

        :param block: wait up to the socket's receive timeout for a request.
        :returns: whether a message arrived.
        """
        try:
            frames = self.call_socket.recv_multipart(0 if block else zmq.NOBLOCK)
        except zmq.Again:
            return False
        self._handle(frames)
        return True

    def serve_while_waiting(self, seconds: float) -> None:
        """Serve the calls that arrive within ``seconds``: a memoized call waiting for another
        process's computation must not stall the module's other endpoints."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if self.call_socket.poll(remaining * 1000):
                self.serve_one()

    def _handle(self, frames: list) -> None:
        identity, body = protocol.split_envelope(frames)
        try:
            message = self.signer.unpack(body)
        except protocol.ProtocolError as err:
            self.dropped += 1
            log.warning("dropped a message: %s", err)
            return
        kind = message.get("type")
        handler = self.dispatch.get(kind) if isinstance(kind, str) else None
        if handler is None or not isinstance(message.get("id"), int):
            self.dropped += 1
            log.warning("dropped a message of type %r with id %r", kind, message.get("id"))
            return
        try:
            reply = handler(message)
        except Exception:  # the loop never dies of its input
            self.dropped += 1
            log.exception("dropped a message that could not be answered")
            return
        try:
            self.call_socket.send_multipart(identity + self.signer.pack(reply))
        except TypeError as err:  # a result msgpack cannot carry
            error = protocol.reply_error(message, "module_error", f"result cannot be sent: {err}")
            self.call_socket.send_multipart(identity + self.signer.pack(error))

    def load(self) -> bool:
        """Load the module; report ``ready`` or ``load_failed``."""
        try:
            layers = self.spec.get("layers") or {}
            self.properties = LayeredRegistry(layers.get("layers", ()), layers.get("failed"))
            rendering.use(rendering.Templates(self.spec["module_dir"]))
            loaded = load_module(self.spec["module_dir"], self.spec["module"])
            # the layers its filters name are imported now: one that fails is this module's load failure
            self.properties.preload(p for e in loaded.endpoints.values() if e.spec.kind == "handler"
                                    for p in filter_paths(e.spec.options.get("filter")))
        except BaseException as err:  # noqa: B036 - SystemExit at import is a load failure too
            text = "".join(traceback.format_exception(err))
            log.error("module %s failed to load\n%s", self.spec["module"], text)
            self.upcaller.notify("load_failed", module=self.spec["module"], traceback=text)
            return False
        self.runtime = ModuleRuntime(loaded, self.spec, self.upcaller, self.properties,
                                     wait=self.serve_while_waiting)
        memoize.use(self.runtime.memos)
        self.call_socket.bind(self.spec["call_endpoint"])
        cpus = os.sched_getaffinity(0)
        self.upcaller.notify("ready", module=loaded.name, pid=os.getpid(), endpoints=loaded.describe(),
                             manifest=loaded.manifest.get("module", {}), confinement=self.spec.get("enforced", {}),
                             cpu=next(iter(cpus)) if len(cpus) == 1 else None)
        return True

    def serve_forever(self) -> None:
        """Serve until SIGTERM or until the parent process is gone."""
        # A blocking recv with a timeout costs far less per request than zmq.poll.
        self.call_socket.setsockopt(zmq.RCVTIMEO, 500)
        parent = self.spec.get("parent_pid")
        while not self.stopping:
            if self.serve_one(block=True):
                continue  # busy: the parent is checked when idle (a dead hostd stops sending)
            if parent and os.getppid() != parent:
                log.warning("hostd is gone; exiting")
                return


def run(spec: dict) -> int:
    """Run one sandbox with ``spec``; :returns: the exit status."""
    spec["enforced"] = confine.apply(spec.get("confinement") or {})
    if spec.get("parent_pid") and os.getppid() != spec["parent_pid"]:
        return 1
    logging.basicConfig(level=spec.get("log_level", "INFO"),
                        format=f"%(asctime)s sandbox[{spec['module']}:%(process)d] %(levelname)s %(name)s: %(message)s")
    for path in spec.get("sys_path", []):
        if path not in sys.path:
            sys.path.append(path)
    context = new_context()
    server = _Server(spec, context)

    def stop(signum, frame):
        server.stopping = True
    signal.signal(signal.SIGTERM, stop)
    # Ctrl-C in a terminal reaches the whole process group; hostd decides when sandboxes stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if not server.load():
            return protocol.EXIT_LOAD_FAILED
        server.serve_forever()
        return 0
    finally:
        server.call_socket.close(0)
        server.upcall_socket.close(2000)
        context.term()


def main(argv=None) -> int:
    """Entry point: ``python -m sandbox SPEC_FILE``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m sandbox SPEC_FILE", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as handle:
        spec = json.load(handle)
    return run(spec)
