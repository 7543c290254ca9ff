"""The host: wires the store, the event path and the sandboxes' supervision together.

``hostd serve`` runs a :class:`Host` plus the web server; the module-author
harness runs a :class:`Host` for one module. Two hosts can live in one process
(nothing here is global), which keeps tests simple. The host itself does little:
it builds the parts, gives each only the callables it needs, and starts and
stops them in order. docs/architecture.md draws the result.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

from sandbox.errors import ModuleLoadError
from sandbox.loader import read_manifest
from sandbox.transport import Contexts

from .broker import Broker, ControlVerb
from .catalog import LayerDescriber
from .cluster import Cluster
from .cgroups import CgroupManager
from .config import Config
from .control import ControlService
from .delivery import Delivery, DeliverySettings
from .discovery import discover
from .federation import Federation
from .forkclient import ForkServer
from .housekeeping import Housekeeping
from .handlers import HandlerTable
from .ingest import IngestThread
from .isolation import Isolation
from .keys import load_secret, module_fs_key
from .launcher import Launcher, sandbox_environment
from .modules import ModuleSet
from .paths import HostPaths
from .placement import CpuPlacement
from .rebuild import Rebuilds
from .reloader import Reloader
from .scheduler import CronLeases, CronScheduler
from .storage import HostStorage
from .store import DataDirLock
from .supervisor import CallTimedOut, ModuleSupervisor, RestartPolicy
from .web import write_runtime_file

__all__ = ["Host"]

log = logging.getLogger("insights.host")


class Host:
    """Everything but the web server.

    :param config: the effective :class:`~hostd.config.Config`.
    :param modules: explicit ``{name: folder}``; default: discovered under ``modules.paths``.
    :param property_modules: more module folders whose ``properties.py`` is loaded
        without running the module (the harness uses it for data layers).
    """

    def __init__(self, config: Config, modules: dict | None = None, property_modules=()):
        self.config = config
        self.paths = HostPaths(Path(config["storage.data_dir"]))
        self._explicit_modules = modules
        self._property_modules = [Path(p).resolve() for p in property_modules]
        self._stopping = threading.Event()
        self._reload_requests: queue.Queue = queue.Queue()
        self._lock: DataDirLock | None = None
        self.storage = HostStorage(config, self.paths.data)
        self.cluster: Cluster | None = None
        self.control_key: bytes | None = None
        self._fs_master_key: bytes | None = None
        self._contexts: Contexts | None = None
        self._cgroups: CgroupManager | None = None
        self._isolation: Isolation | None = None
        self._forkserver: ForkServer | None = None
        self.handlers = HandlerTable()
        self.modules: ModuleSet | None = None
        self._launcher: Launcher | None = None
        self._describer: LayerDescriber | None = None
        self.ingest: IngestThread | None = None
        self.broker: Broker | None = None
        self.delivery: Delivery | None = None
        self.realtime: Delivery | None = None
        self.scheduler: CronScheduler | None = None
        self._control: ControlService | None = None
        self._rebuilds: Rebuilds | None = None
        self._monitor: threading.Thread | None = None
        self._reloader: Reloader | None = None
        self._housekeeping: Housekeeping | None = None
        self._policy = RestartPolicy.from_config(config)

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        """Lock the data dir, start the store and the threads, spawn every sandbox."""
        self.paths.make()
        self._lock = DataDirLock(self.paths.data)
        self._lock.acquire()
        try:
            self.storage.open()
            self.cluster = Cluster(self.config, self.paths.data, self.storage.state_db, self.storage.cursors,
                                   self.storage.eventlog.voids_between)
            self.control_key = load_secret(self.paths.run / "control.key")
            self._fs_master_key = load_secret(self.paths.data / "fs.key")
            web_config = Config({**self.config.as_dict(), "cluster.node_id": self.cluster.node})
            write_runtime_file(self.paths.runtime_file, web_config, self.paths, self.control_key,
                               self._fs_master_key, self.storage.url)
            self._contexts = Contexts()
            self._start_event_path()
            self._start_supervision()
        except BaseException:
            self.stop()
            raise

    def _start_event_path(self) -> None:
        """POST -> ingest -> log -> delivery -> sandboxes; realtime progress back to ingest."""
        self.modules = ModuleSet(self._new_supervisor, self.paths.table_file, on_publish=self._published)
        settings = DeliverySettings.from_config(self.config)
        storage = self.storage
        parts = (self.handlers, self.modules.record, storage.eventlog, storage.cursors, storage.dead_letters,
                 self._contexts, settings)
        self.ingest = IngestThread(self.paths.ingest_endpoint, self.control_key, storage.eventlog,
                                   self._on_appended, self._contexts.general, self.handlers.realtime_matches,
                                   lambda module, handler: self.cluster.position(self.realtime.position, module,
                                                                                 handler),
                                   self.config["limits.realtime_timeout_s"],
                                   lambda module, handler, seqs: self.realtime.handled_any(module, handler, seqs))
        self.delivery = Delivery(*parts, modes=("queued", "batch"), cluster=self.cluster)
        self.realtime = Delivery(*parts, modes=("realtime",), on_progress=self.ingest.realtime_progress,
                                 cluster=self.cluster)
        self.scheduler = CronScheduler(CronLeases(storage.state_db), self.modules.record, self._contexts,
                                       lambda module, pid, reason: self.modules.report(module, CallTimedOut(pid, reason)),
                                       may_run=self.cluster.may_run)
        self.ingest.start()
        self.ingest.wait_bound()
        self._rebuilds = Rebuilds(self.modules, self.handlers, (self.delivery, self.realtime), storage)
        self._control = ControlService(self.modules, (self.delivery, self.realtime), storage.eventlog,
                                       storage.dead_letters, self.scheduler, self._rebuilds, self.cluster)
        peers = Federation.from_config(self.config)
        self.broker = Broker(self._contexts.general, self.paths, self.control_key, self.modules.signer_of,
                             self.modules.report, lambda kind, name: self.modules.snapshot().resolve(kind, name),
                             {**self._control.verbs(), "retention": ControlVerb(lambda message: self.retention_stats())},
                             peers.call if peers is not None else None)
        self.broker.start()
        self.broker.wait_bound()

    def _start_supervision(self) -> None:
        """Confinement, the launcher, the modules' supervisors, then delivery and the monitor."""
        self._cgroups = CgroupManager()
        self._cgroups.log_state()
        self._isolation = Isolation.for_config(self.paths, self.config, self.storage.url)
        if self.config["sandbox.prewarm"]:
            self._forkserver = ForkServer(self.paths.ipc / "forkserver.sock", sandbox_environment())
        self._launcher = Launcher(self.paths, self.config, self.storage.url, self.broker.ensure_upcall,
                                  self._cgroups, self._isolation, self._forkserver,
                                  CpuPlacement(self.config["sandbox.pin_cpu"]), self.storage.release_leases)
        limits = self.config.limits()
        self._describer = LayerDescriber(
            lambda identity, folder, layer: self._launcher.describe_layer(identity, folder, layer, limits))
        self.cluster.start()
        discovery = self._discover()
        self.modules.apply(discovery)
        self.delivery.start()
        self.realtime.start()
        self.scheduler.start()
        self._housekeeping = Housekeeping(self.config, self.paths.data / "modules", self.storage,
                                          self._delivery_positions)
        self._housekeeping.start()
        self._monitor = threading.Thread(target=self._monitor_loop, name="insights-monitor", daemon=True)
        self._monitor.start()
        if self._explicit_modules is None and self.config["modules.reload"]:
            self._reloader = Reloader(self.config["modules.paths"], self._reload_requests.put)
            self._reloader.start()

    def _delivery_positions(self) -> list[int]:
        """:returns: every handler position this node's delivery threads hold in memory."""
        return [state.position or 0 for thread in (self.delivery, self.realtime)
                for module in self.modules.names() for state in thread.states(module)]

    def retention_stats(self) -> dict:
        """:returns: :meth:`~hostd.retention.Retention.stats` (``{}`` before the host started)."""
        return self._housekeeping.retention.stats() if self._housekeeping is not None else {}

    def stop(self) -> None:
        """Stop the threads, every sandbox at once, then the store; release the data dir. Idempotent."""
        self._stopping.set()
        if self._housekeeping is not None:
            self._housekeeping.stop()
        for thread in (self._reloader, self._monitor, self.scheduler, self.delivery, self.realtime):
            if thread is not None and thread.is_alive():
                if hasattr(thread, "stop"):
                    thread.stop()
                thread.join(10)
        if self.cluster is not None:  # nothing feeds its consumers any more: give the leases back
            self.cluster.stop()
        if self.modules is not None:
            self.modules.stop()
        for thread in (self.broker, self.ingest):
            if thread is not None and thread.is_alive():
                thread.stop()
                thread.join(5)
        if self._contexts is not None:  # every thread using them has stopped
            self._contexts.destroy(linger=0)
            self._contexts = None
        for closing in (self._cgroups, self._isolation):
            if closing is not None:
                closing.close()
        if self._forkserver is not None:
            self._forkserver.stop()
        self._forkserver = self._cgroups = self._isolation = None
        self.storage.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- supervision -----------------------------------------------------------
    def _discover(self, names=None):
        serving = [] if names is None else [
            layer["origin"].removeprefix("module ") for layer in self._launcher.layers["layers"]
            if layer["origin"].removeprefix("module ") not in names]
        discovery = self.cluster.placement.restrict(discover(
            self.config["modules.paths"], self._describer, self._explicit_modules, self._property_modules,
            first=serving))
        self._launcher.layers = discovery.properties.for_sandboxes()
        return discovery

    def _new_supervisor(self, name: str, folder, error: str | None = None) -> ModuleSupervisor:
        """A supervisor for one module folder (failed at once when ``error`` or its module.toml is bad)."""
        try:
            manifest_limits = read_manifest(folder)["limits"] if folder else {}
            limits = self.config.limits(manifest_limits, origin=f"{folder}/module.toml")
        except (ModuleLoadError, ValueError) as err:
            limits, error = self.config.limits(), error or str(err)
        supervisor = ModuleSupervisor(name, folder or Path("."), limits, self._launcher,
                                      module_fs_key(self._fs_master_key, name), self._policy,
                                      self.modules.changed.set, self._admit)
        if error:
            supervisor.fail(error)
        return supervisor

    def _admit(self, module: str, endpoints: list) -> str | None:
        """A sandbox is ready: refuse names another module serves; place new handlers' cursors."""
        error = self.modules.admit(module, endpoints)
        if error is None:
            new = [e["name"] for e in endpoints if e["class"] == "handler"
                   and not (e.get("options") or {}).get("backfill", True)]
            self.storage.cursors.place_at_head(module, new, self.storage.eventlog.head)
        return error

    def _monitor_loop(self) -> None:
        """The one thread that changes supervisors: reloads, signals, deaths, restarts."""
        while not self._stopping.is_set():
            woken = self.modules.changed.wait(0.1)
            try:  # reloads happen here, on the thread that spawns sandboxes (PDEATHSIG follows it)
                names = self._reload_requests.get_nowait()
                discovery = self._discover(names)
                for name in set(names) - discovery.names():
                    self._launcher.forget(name)
                self.modules.apply(discovery, names)
            except queue.Empty:
                pass
            except Exception:
                log.exception("hot reload failed")
            self.modules.tick()
            self._rebuilds.check()
            if woken or self.modules.changed.is_set():
                self.modules.publish()

    def _published(self, records: dict, properties) -> None:
        """A new module table: the handler table and the scheduler follow it."""
        self.handlers.update(records, properties)
        if self.cluster is not None:
            self.cluster.follow(self.handlers.routes(), records)
        if self.scheduler is not None:
            self.scheduler.update(records)

    def module_status(self) -> dict:
        """:returns: the ``/modules`` answer (see :meth:`~hostd.control.ControlService.module_status`)."""
        return self._control.module_status()

    # -- for the harness and tests ---------------------------------------------
    def current_record(self, name: str) -> dict | None:
        """:returns: module ``name``'s up-to-date record."""
        return self.modules.record(name) if self.modules is not None else None

    def wait_ready(self, timeout_s: float = 60.0) -> bool:
        """Block until no module is starting or restarting. :returns: whether that happened."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.modules.settled():
                return True
            time.sleep(0.02)
        return False

    def wait_delivered(self, module: str, seq: int, timeout_s: float) -> bool:
        """Block until every handler of ``module`` (all modes) is past ``seq``."""
        deadline = time.time() + timeout_s
        return all(thread.wait_delivered(module, seq, max(0.0, deadline - time.time()))
                   for thread in (self.delivery, self.realtime))

    def redeliver(self, module: str, after_seq: int, timeout_s: float = 60.0) -> bool:
        """Deliver every event after ``after_seq`` again to ``module``'s handlers and wait for them.

        :returns: whether they caught up in time.
        """
        head = self._rebuilds.redeliver(module, after_seq)
        return self.wait_delivered(module, head, timeout_s)

    def _on_appended(self, seq: int) -> None:
        self.delivery.notify(seq)
        self.realtime.notify(seq)
