"""The harness module authors test with: a module in a real sandbox, a real store.

    from sandbox.testing import ModuleHarness

    with ModuleHarness("contrib_modules/event_count") as h:
        h.send_events([{"username": "bob", "event_type": "play_video"}])
        assert h.query("user_event_count", user="bob") == 1

The harness runs the same :class:`hostd.host.Host` as ``hostd serve`` (embedded
store, supervisor, broker, event log, delivery) for just this module, without
the web server. :class:`ModulesHarness` does the same for every module of a
folder (they call each other's queries as under hostd); ``Insights.local`` of
:mod:`hostd.client` is built on it.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from .errors import ModuleLoadError, ModuleTimeout
from .loader import check_module_name
from .transport import Contexts

__all__ = ["ModulesHarness", "ModuleHarness"]


class ModulesHarness:
    """Run several modules in one host, as ``hostd serve`` does, without the web server.

    :param modules: a modules folder (each ``<name>/__init__.py`` in it is a module),
        or ``{name: folder}``.
    :param data_dir: where the store and files go (default: a temporary folder, removed after).
    :param mongo_url: use this MongoDB instead of starting the embedded store.
    :param settings: other settings by dotted key (``{"limits.call_timeout_s": 5}``).
    :param properties: more module folders whose ``properties.py`` is loaded (data layers
        such as ``contrib_modules/tincan``), without running those modules.
    """

    def __init__(self, modules, data_dir=None, mongo_url=None, settings=None, properties=()):
        self._modules = modules
        self._own_dir = data_dir is None
        self._data_dir = data_dir
        self._mongo_url = mongo_url
        self._settings = dict(settings or {})
        self._property_modules = list(properties)
        self._contexts = None
        self.host = None

    def _module_folders(self) -> dict:
        if isinstance(self._modules, dict):
            return {check_module_name(name): Path(folder).resolve() for name, folder in self._modules.items()}
        from hostd.discovery import discover_modules
        found, errors = discover_modules([self._modules])
        if errors:
            raise ModuleLoadError("\n".join(errors.values()))
        return found

    def start(self):
        """Start the store and every module's sandbox.

        :returns: the harness.
        :raises ModuleLoadError: a module did not load (each one that failed is named, with its error).
        """
        from hostd.calls import SandboxClient
        from hostd.config import load_config
        from hostd.host import Host
        from hostd.ingest import IngestClient
        folders = self._module_folders()
        if self._own_dir:
            prefix = f"insights-{next(iter(folders))}-" if len(folders) == 1 else "insights-"
            self._data_dir = tempfile.mkdtemp(prefix=prefix)
        config = load_config(None, {**self._settings, "storage.data_dir": str(self._data_dir),
                                    "storage.mongo_url": self._mongo_url})
        self.host = Host(config, modules=folders, property_modules=self._property_modules)
        try:
            self.host.start()
            self.host.wait_ready(config["limits.start_timeout_s"] + 5)
            self.host.modules.publish()  # the snapshot calls resolve through, as of now
            failed = {name: self.host.current_record(name) for name in folders}
            failed = {name: record for name, record in failed.items() if record["state"] != "running"}
            if failed:
                raise ModuleLoadError("\n".join(f"module {name!r} is {record['state']}:\n{record['last_error']}"
                                                for name, record in sorted(failed.items())))
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
        if self._contexts is not None:
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

    def call(self, kind: str, name: str, params: dict, timeout_s: float | None = None):
        """Call the view or query ``name`` of whichever module has it, as hostd would.

        :param timeout_s: give up sooner than the module's ``limits.call_timeout_s``.
        :raises InsightsError: as over HTTP: not found, bad parameter, module raised,
            crashed, not running, timeout (past its own limit, the sandbox is killed and
            restarted, as hostd does).
        """
        record, _ = self.host.modules.snapshot().resolve(kind, name)
        limit = record["limits"]["call_timeout_s"]
        timeout = limit if timeout_s is None else min(timeout_s, limit)
        try:
            return self._calls.call(record, kind, name, params, timeout)
        except ModuleTimeout as err:
            if timeout >= limit:
                from hostd.supervisor import CallTimedOut
                self.host.modules.get(record["name"]).signal(CallTimedOut(record.get("pid"), str(err)))
            raise

    def schema(self) -> list[dict]:
        """:returns: the ``/schema`` entries of the running modules."""
        from hostd.dashboard import schema_entries
        return schema_entries(self.host.modules.snapshot())

    def query(self, name: str, **params):
        """:returns: the result of a query."""
        return self.call("query", name, params)

    def view(self, name: str, **params) -> str:
        """:returns: the HTML of a view."""
        return self.call("view", name, params)

    def send_events(self, events, timeout_s: float = 60.0) -> dict:
        """Log events and wait until every module's handlers have processed them.

        :param events: an event dict or a list of them.
        :returns: ``{"accepted", "duplicates", "ids"}`` as ``POST /event`` answers.
        :raises TimeoutError: the handlers did not catch up in time.
        """
        from hostd.eventbody import events_from_json
        result = self._ingest.append(events_from_json(events), "http")
        head = self.host.storage.eventlog.head()
        deadline = time.monotonic() + timeout_s
        for name in self.host.module_status():
            if not self.host.wait_delivered(name, head, max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"handlers of {name!r} did not process the events in {timeout_s} s")
        return {"accepted": result["accepted"], "duplicates": result["duplicates"], "ids": result["ids"]}


class ModuleHarness(ModulesHarness):
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
        super().__init__({self.name: self.path}, data_dir, mongo_url, settings, properties)

    def start(self) -> "ModuleHarness":
        """Start the store and the module's sandbox; :raises ModuleLoadError: it did not load."""
        return super().start()

    def redeliver(self, after_seq: int = 0, timeout_s: float = 60.0) -> int:
        """Deliver every logged event after ``after_seq`` again to the module's handlers, as
        hostd does when a sandbox died before acknowledging them; wait until they are done.

        A module exact under at-least-once delivery answers the same before and after.

        :returns: how many events were delivered again.
        :raises TimeoutError: the handlers did not catch up in time.
        """
        if not self.host.redeliver(self.name, after_seq, timeout_s):
            raise TimeoutError(f"handlers of {self.name!r} did not process the events again in {timeout_s} s")
        return self.log_head() - after_seq

    def log_head(self) -> int:
        """:returns: the log position of the latest event (give it to :meth:`redeliver`)."""
        return self.host.storage.eventlog.head()

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
