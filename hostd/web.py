"""What a web worker needs to reach the host: built after the fork, once per process.

:class:`WebContext` reads the host's runtime file (0600, in the private run
folder) and opens its own ZeroMQ context and sockets the first time it is used
in a process, so gunicorn can fork workers freely.
"""
from __future__ import annotations

import json
import os
import threading

import zmq

from sandbox import protocol
from sandbox.errors import InsightsError, error_from_reply

from .calls import SandboxClient
from .config import Config
from .host import module_fs_key
from .ingest import IngestClient
from .modtable import ModuleTableReader

__all__ = ["WebContext"]


class WebContext:
    """A worker's handle on the host.

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
        self._pid = None
        self._local = threading.local()

    def _ensure(self):
        """Open this process's (and thread's) sockets on first use after a fork."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._context = zmq.Context()
            self._local = threading.local()
        local = self._local
        if getattr(local, "sandboxes", None) is None:
            local.sandboxes = SandboxClient(self._context, self._current_record)
            local.ingest = IngestClient(self._context, self._runtime["ingest_endpoint"], self._control_key)
            local.control = self._context.socket(zmq.DEALER)
            local.control.setsockopt(zmq.LINGER, 0)
            local.control.connect(self._runtime["control_endpoint"])
        return local

    def _current_record(self, module: str):
        return self.table.snapshot().modules.get(module)

    def call(self, kind: str, name: str, params: dict):
        """Call a view or query by name. :raises InsightsError: 404/400/500/502/503/504 cases."""
        record, endpoint = self.table.snapshot().resolve(kind, name)
        timeout = record["limits"]["call_timeout_s"]
        local = self._ensure()
        try:
            return local.sandboxes.call(record, kind, name, params, timeout)
        except InsightsError as err:
            if err.code == "timeout":
                self._control_send(protocol.notification("timeout_report", module=record["name"],
                                                         pid=record.get("pid"), reason=str(err)))
            raise

    def append_events(self, events: list[dict], source: str = "http") -> dict:
        """:returns: ``{"accepted", "duplicates", "ids"}`` once the events are durably logged."""
        result = self._ensure().ingest.append(events, source)
        return {"accepted": result["accepted"], "duplicates": result["duplicates"], "ids": result["ids"]}

    def _control_send(self, message: dict) -> None:
        signer = protocol.Signer(self._control_key)
        self._ensure().control.send_multipart(signer.pack(message))

    def module_status(self, timeout_s: float = 10.0) -> dict:
        """:returns: the ``/modules`` answer, asked of the host."""
        local = self._ensure()
        signer = protocol.Signer(self._control_key)
        message = protocol.request("status", timeout_s)
        local.control.send_multipart(signer.pack(message))
        while local.control.poll(timeout_s * 1000):
            reply = signer.unpack(local.control.recv_multipart())
            if reply.get("id") == message["id"]:
                if reply.get("ok"):
                    return reply["result"]
                raise error_from_reply(reply.get("error") or {})
        raise InsightsError("hostd did not answer in time")

    def fs_key(self, module: str) -> bytes:
        """:returns: the key module ``module`` signs its file URLs with."""
        return module_fs_key(self._fs_master, module)

    def module_fs_root(self, module: str) -> str:
        """:returns: the folder of module ``module``'s files."""
        return os.path.join(self.config["storage.data_dir"], "modules", module, "fs")
