"""What a web worker needs to reach the host: built after the fork, once per process.

:class:`WebContext` reads the host's runtime file (0600, in the private run
folder) and opens its own ZeroMQ context and sockets the first time it is used
in a process, so gunicorn can fork workers freely.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time

import zmq

from sandbox import protocol
from sandbox.errors import InsightsError, ModuleTimeout, error_from_reply
from sandbox.transport import Contexts

from .calls import SandboxClient
from .config import Config
from .federation import Federation
from .keys import module_fs_key
from .ingest import IngestClient
from .modtable import ModuleTableReader

__all__ = ["WebContext", "RealtimeTimeout", "write_runtime_file"]


def write_runtime_file(path, config: Config, paths, control_key: bytes, fs_master_key: bytes,
                       store_url: str) -> None:
    """Write what web workers need to reach the host (mode 0600; read by :class:`WebContext`)."""
    runtime = {"config": config.as_dict(), "table_file": str(paths.table_file),
               "ingest_endpoint": paths.ingest_endpoint, "control_endpoint": paths.control_endpoint,
               "control_key": control_key.hex(), "fs_master_key": fs_master_key.hex(), "store_url": store_url}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(runtime, handle)


class RealtimeTimeout(ModuleTimeout):
    """Realtime handlers did not finish in time; the events are logged and will be retried.

    :param answer: the ingestion answer (``accepted``, ``duplicates``, ``ids``).
    """

    def __init__(self, message: str, answer: dict):
        super().__init__(message)
        self.answer = answer

    def to_reply_fields(self) -> dict:
        return {**super().to_reply_fields(), **self.answer}


class _Channels:
    """One request's connections to the host: sandboxes, the ingest thread, the control socket."""

    def __init__(self, contexts: Contexts, runtime: dict, control_key: bytes, current_record):
        self.sandboxes = SandboxClient(contexts, current_record)
        self.ingest = IngestClient(contexts.general, runtime["ingest_endpoint"], control_key)
        self.control = contexts.general.socket(zmq.DEALER)
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.connect(runtime["control_endpoint"])
        self.control_signer = protocol.Signer(control_key)


class WebContext:
    """A worker's handle on the host.

    A worker serves requests on several threads. Each request borrows a set of
    connections (:class:`_Channels`) from a per-process pool and gives it back, so
    the sockets grow with the requests in flight, not with threads times modules.

    :param runtime_file: the host's ``run/runtime.json``.
    """

    def __init__(self, runtime_file: str):
        with open(runtime_file, encoding="utf-8") as handle:
            runtime = json.load(handle)
        self.config = Config(runtime["config"])
        self._runtime = runtime
        self.table = ModuleTableReader(runtime["table_file"])
        self._control_key = bytes.fromhex(runtime["control_key"])
        self._fs_master = bytes.fromhex(runtime["fs_master_key"])
        self._lock = threading.Lock()
        self._pid = None
        self._contexts = None
        self._idle: list[_Channels] = []
        #: ``observe(module, kind, seconds)`` after each call into a sandbox (``/metrics`` adds one)
        self.call_observers: list = []
        #: the other nodes whose views and queries this one answers too (``None``: no ``[[peers]]``)
        self.peers = Federation.from_config(self.config)

    @contextlib.contextmanager
    def _channels(self):
        """Borrow a set of connections, made in this process (contexts open on first use after a fork)."""
        with self._lock:
            if self._pid != os.getpid():
                self._contexts, self._idle, self._pid = Contexts(), [], os.getpid()
            channels = self._idle.pop() if self._idle else None
        if channels is None:
            channels = _Channels(self._contexts, self._runtime, self._control_key, self._current_record)
        try:
            yield channels
        finally:
            with self._lock:
                self._idle.append(channels)

    @property
    def store_url(self) -> str:
        """The store's URL (the GridFS file backend reads through it)."""
        return self._runtime["store_url"]

    def _current_record(self, module: str):
        return self.table.snapshot().modules.get(module)

    def call(self, kind: str, name: str, params: dict):
        """Call a view or query by name. :raises InsightsError: 404/400/500/502/503/504 cases."""
        record, endpoint = self.table.snapshot().resolve(kind, name)
        timeout = record["limits"]["call_timeout_s"]
        started = time.perf_counter()
        try:
            with self._channels() as channels:
                return channels.sandboxes.call(record, kind, name, params, timeout)
        except InsightsError as err:
            if err.code == "timeout":
                self._control_send(protocol.notification("timeout_report", module=record["name"],
                                                         pid=record.get("pid"), reason=str(err)))
            raise
        finally:
            for observe in self.call_observers:
                observe(record["name"], kind, time.perf_counter() - started)

    def append_events(self, events: list[dict], source: str = "http") -> dict:
        """Log events durably and wait for the realtime handlers they match.

        :returns: ``{"accepted", "duplicates", "ids", "realtime"}``; ``realtime`` tells
            whether realtime handlers ran before this answer.
        :raises RealtimeTimeout: realtime handlers did not finish in ``limits.realtime_timeout_s``.
        """
        realtime_timeout_s = self.config["limits.realtime_timeout_s"]
        with self._channels() as channels:
            result = channels.ingest.append(events, source, timeout_s=30.0 + realtime_timeout_s, realtime=True)
        answer = {"accepted": result["accepted"], "duplicates": result["duplicates"], "ids": result["ids"]}
        if result.get("realtime_timeout"):
            raise RealtimeTimeout(result["realtime_timeout"], answer)
        return {**answer, "realtime": bool(result.get("realtime"))}

    def _control_send(self, message: dict) -> None:
        with self._channels() as channels:
            channels.control.send_multipart(channels.control_signer.pack(message))

    def _control_request(self, verb: str, timeout_s: float, **fields):
        """Ask the host over the control socket. :raises InsightsError: its error, or no answer in time."""
        with self._channels() as channels:
            signer = channels.control_signer
            message = protocol.request(verb, timeout_s, **fields)
            channels.control.send_multipart(signer.pack(message))
            deadline = message["deadline"] + 1.0  # the host answers a timeout itself at the deadline
            while channels.control.poll(max(0.0, deadline - time.time()) * 1000):
                reply = signer.unpack(channels.control.recv_multipart())
                if reply.get("id") == message["id"]:
                    if reply.get("ok"):
                        return reply["result"]
                    raise error_from_reply(reply.get("error") or {})
        raise ModuleTimeout(f"hostd did not answer {verb} in time")

    def module_status(self) -> dict:
        """:returns: the ``/modules`` answer, asked of the host."""
        return self._control_request("status", 10.0)

    def retention_stats(self) -> dict:
        """:returns: the host's retention figures (:meth:`hostd.retention.Retention.stats`)."""
        return self._control_request("retention", 10.0)

    def stored_events(self, ids: list[str]) -> dict:
        """:returns: ``{identity: event}`` of the logged events among ``ids``."""
        return self._control_request("stored_events", 10.0, ids=list(ids))

    def dead_letters(self, module: str) -> list[dict]:
        """:returns: a module's dead letters. :raises EndpointNotFound: no such module."""
        return self._control_request("dead_letters", 10.0, module=module)

    def retry_dead_letters(self, module: str) -> dict:
        """Send a module's dead letters back through their handlers. :returns: ``{"retrying": n}``."""
        return self._control_request("dead_letters_retry", 10.0, module=module)

    def run_cron(self, module: str, task: str) -> dict:
        """Run a module's cron task now and wait for it. :returns: ``{"result", "seconds"}``.

        :raises InsightsError: no such task (404), a run is going (409), the run failed.
        """
        record = self.table.snapshot().modules.get(module) or {}
        timeout_s = (record.get("limits") or {}).get("call_timeout_s", 30.0) + 10.0
        return self._control_request("cron_run", timeout_s, module=module, task=task)

    def rebuild(self, module: str, handler: str | None = None) -> dict:
        """Drop a module's data (or a handler's collections) and replay its handlers.

        :returns: ``{"handlers", "target", "dropped"}``: the module is rebuilt once those
            handlers are past log position ``target``.
        """
        return self._control_request("rebuild", 60.0, module=module, handler=handler)

    def fs_key(self, module: str) -> bytes:
        """:returns: the key module ``module`` signs its file URLs with."""
        return module_fs_key(self._fs_master, module)

    def module_fs_root(self, module: str) -> str:
        """:returns: the folder of module ``module``'s files."""
        return os.path.join(self.config["storage.data_dir"], "modules", module, "fs")
