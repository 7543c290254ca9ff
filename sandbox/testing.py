"""The harness module authors test with: a module in a real sandbox, a real store.

    from sandbox.testing import ModuleHarness

    with ModuleHarness("contrib_modules/event_count") as h:
        h.send_events([{"username": "bob", "event_type": "play_video"}])
        assert h.query("user_event_count", user="bob") == 1

The harness runs the same :class:`hostd.host.Host` as ``hostd serve`` (embedded
store, supervisor, broker, event log, delivery) for just this module, without
the web server.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .errors import ModuleLoadError
from .loader import check_module_name
from .transport import Contexts

__all__ = ["ModuleHarness"]


class ModuleHarness:
    """Run one module for a test.

    :param path: the module's folder.
    :param data_dir: where the store and files go (default: a temporary folder, removed after).
    :param mongo_url: use this MongoDB instead of starting the embedded store.
    :param settings: other settings by dotted key (``{"limits.call_timeout_s": 5}``).
    :param properties: more module folders whose ``properties.py`` is loaded (data layers
        such as ``contrib_modules/tincan``), without running those modules.
    """

    def __init__(self, path, data_dir=None, mongo_url=None, settings=None, properties=()):
        self.name = check_module_name(Path(path).absolute().name)  # a symlink's own name
        self.path = Path(path).resolve()
        self._own_dir = data_dir is None
        self._data_dir = data_dir
        self._mongo_url = mongo_url
        self._settings = dict(settings or {})
        self._property_modules = list(properties)
        self.host = None

    def start(self) -> "ModuleHarness":
        """Start the store and the module's sandbox; :raises ModuleLoadError: it did not load."""
        from hostd.calls import SandboxClient
        from hostd.config import load_config
        from hostd.host import Host
        from hostd.ingest import IngestClient
        if self._own_dir:
            self._data_dir = tempfile.mkdtemp(prefix=f"insights-{self.name}-")
        config = load_config(None, {**self._settings, "storage.data_dir": str(self._data_dir),
                                    "storage.mongo_url": self._mongo_url})
        self.host = Host(config, modules={self.name: self.path}, property_modules=self._property_modules)
        try:
            self.host.start()
            self.host.wait_ready(config["limits.start_timeout_s"] + 5)
            record = self.host.current_record(self.name)
            if record["state"] != "running":
                raise ModuleLoadError(f"module {self.name!r} is {record['state']}:\n{record['last_error']}")
            self._contexts = Contexts()
            self._calls = SandboxClient(self._contexts, self.host.current_record)
            self._ingest = IngestClient(self._contexts.general, self.host.paths.ingest_endpoint,
                                        self.host.control_key)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop everything and remove the temporary data dir."""
        if getattr(self, "_contexts", None) is not None:
            self._calls.close()
            self._ingest.close()
            self._contexts.destroy(linger=0)
            self._contexts = None
        if self.host is not None:
            self.host.stop()
            self.host = None
        if self._own_dir and self._data_dir:
            shutil.rmtree(self._data_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _call(self, kind, name, params):
        record = self.host.current_record(self.name)
        return self._calls.call(record, kind, name, params, record["limits"]["call_timeout_s"])

    def query(self, name: str, **params):
        """Call a query of the module (or, through hostd, of no other: only this module runs)."""
        return self._call("query", name, params)

    def view(self, name: str, **params) -> str:
        """:returns: the HTML of a view of the module."""
        return self._call("view", name, params)

    def send_events(self, events, timeout_s: float = 60.0) -> dict:
        """Log events and wait until the module's handlers have processed them.

        :param events: an event dict or a list of them.
        :returns: ``{"accepted", "duplicates", "ids"}`` as ``POST /event`` answers.
        :raises TimeoutError: the handlers did not catch up in time.
        """
        from hostd.eventbody import events_from_json
        events = events_from_json(events)
        result = self._ingest.append(events, "http")
        head = self.host.storage.eventlog.head()
        if not self.host.wait_delivered(self.name, head, timeout_s):
            raise TimeoutError(f"handlers of {self.name!r} did not process the events in {timeout_s} s")
        return {"accepted": result["accepted"], "duplicates": result["duplicates"], "ids": result["ids"]}

    def run_cron(self, name: str):
        """Run the module's cron task ``name`` now, as hostd's scheduler does (with its lease).

        :returns: what the task returned.
        :raises InsightsError: the task failed, or is already running.
        """
        return self.host.scheduler.run_now(self.name, name)

    def status(self) -> dict:
        """:returns: the module's ``/modules`` entry."""
        return self.host.module_status()[self.name]

    @property
    def db(self):
        """The module's own database (pymongo)."""
        return self.host.storage.client[f"mod_{self.name}"]

    @property
    def fs_root(self) -> Path:
        """The folder of the module's ``fs``."""
        return self.host.paths.module_data(self.name) / "fs"
