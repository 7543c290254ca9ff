"""The host: store, event log, sandboxes and the threads serving them, in one object.

``hostd serve`` runs a :class:`Host` plus the web server; the module-author
harness runs a :class:`Host` for one module. Two hosts can live in one process
(nothing here is global), which keeps tests simple.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sandbox.errors import ModuleLoadError
from sandbox.loader import MODULE_NAME, read_manifest
from sandbox.properties import load_registry, properties_file
from sandbox.transport import Contexts

from . import store as storemod
from .broker import Broker
from .cgroups import CgroupManager
from .forkclient import ForkServer
from .isolation import Isolation
from .config import Config
from .deadletters import DeadLetters
from .delivery import Delivery, compile_filter
from .eventlog import Cursors, EventLog
from .ingest import IngestThread
from .modtable import Snapshot, write_table
from .placement import CpuPlacement
from .reloader import Reloader
from .supervisor import ModuleSupervisor, sandbox_environment

__all__ = ["HostPaths", "Host", "discover_modules", "module_fs_key"]

log = logging.getLogger("insights.host")
_MAX_IPC_DIR = 60  # + "/<module name up to 32>/upcall.sock" stays under the 107-byte socket limit


@dataclass(frozen=True)
class HostPaths:
    """Where a host keeps its files under the data dir."""

    data: Path

    @property
    def run(self) -> Path:
        """Private (0700) folder: module table, runtime file, sandbox specs."""
        return self.data / "run"

    @property
    def ipc(self) -> Path:
        """Private (0700) folder of the ipc:// sockets.

        Unix socket paths are limited to 107 bytes: under a deep data dir the
        folder moves to a short per-data-dir path in the temporary folder.
        """
        inside = self.data / "ipc"
        if len(str(inside)) <= _MAX_IPC_DIR:
            return inside
        digest = hashlib.sha256(str(self.data.resolve()).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"insights-ipc-{digest}"

    @property
    def logs(self) -> Path:
        """One log file per sandbox."""
        return self.data / "logs"

    def module_data(self, module: str) -> Path:
        """A module's own folder (its ``fs`` lives in ``fs/`` there)."""
        return self.data / "modules" / module

    def module_ipc(self, module: str) -> Path:
        """A module's private (0700) folder of sockets: call, upcall and store."""
        return self.ipc / module

    @property
    def ingest_endpoint(self) -> str:
        return f"ipc://{self.ipc / 'ingest.sock'}"

    @property
    def control_endpoint(self) -> str:
        return f"ipc://{self.ipc / 'control.sock'}"

    @property
    def table_file(self) -> Path:
        return self.run / "modules.json"

    @property
    def runtime_file(self) -> Path:
        return self.run / "runtime.json"

    def make(self) -> None:
        """Create the folders with private modes."""
        self.data.mkdir(parents=True, exist_ok=True)
        for folder in (self.run, self.ipc):
            folder.mkdir(mode=0o700, exist_ok=True)
            os.chmod(folder, 0o700)
        self.logs.mkdir(exist_ok=True)


def discover_modules(paths) -> tuple[dict, dict]:
    """Find module folders (``<dir>/<name>/__init__.py``) under each of ``paths``.

    :returns: ``({name: folder}, {name: error})``; a name found twice is an error naming both.
    """
    found, errors = {}, {}
    for base in paths:
        base = Path(base)
        if not base.is_dir():
            log.warning("modules path %s is not a folder", base)
            continue
        for folder in sorted(base.iterdir()):
            if not (folder / "__init__.py").is_file() or not MODULE_NAME.match(folder.name):
                continue
            if folder.name in found:
                errors[folder.name] = f"module {folder.name!r} found twice: {found[folder.name]} and {folder}"
                continue
            found[folder.name] = folder.resolve()
    return found, errors


def module_fs_key(master: bytes, module: str) -> bytes:
    """:returns: the key a module signs its file URLs with (derived, so it cannot sign for others)."""
    return hmac.new(master, f"fs|{module}".encode(), hashlib.sha256).digest()


def _secret(path: Path) -> bytes:
    """Read a 32-byte secret from ``path``, creating it (0600) if absent."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(os.urandom(32).hex())
        return bytes.fromhex(path.read_text().strip())


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
        self.properties = None
        self._supervisors: dict[str, ModuleSupervisor] = {}
        self._table_lock = threading.Lock()
        self._snapshot = Snapshot({})
        self._dirty = threading.Event()
        self._reload_requests: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        self._lock = None
        self._store = None
        self.store_url = None
        self.client = None
        self.dead_letters = None
        self._realtime_filters: dict = {}
        self.placement = CpuPlacement(config["sandbox.pin_cpu"])

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        """Lock the data dir, start the store and the threads, spawn every sandbox."""
        self.paths.make()
        self._lock = storemod.DataDirLock(self.paths.data)
        self._lock.acquire()
        try:
            self._start_store()
            self.cgroups = CgroupManager()
            self.isolation = self._isolation()
            self.forkserver = None
            if self.config["sandbox.prewarm"]:
                self.forkserver = ForkServer(self.paths.ipc / "forkserver.sock", sandbox_environment())
            if self.cgroups.available:
                log.info("confinement: per-sandbox cgroups (memory, processes) and rlimits")
            else:
                log.warning("confinement: no cgroups (%s); memory is limited by address space only,"
                            " processes only when sandboxes have a uid of their own", self.cgroups.reason)
            self.control_key = _secret(self.paths.run / "control.key")
            self.fs_master_key = _secret(self.paths.data / "fs.key")
            self.contexts = Contexts()
            self.ingest = IngestThread(self.paths.ingest_endpoint, self.control_key, self.eventlog,
                                       self._on_appended, self.contexts.general, self.realtime_matches)
            self.ingest.start()
            self.ingest.wait_bound()
            self.broker = Broker(self, self.contexts.general)
            self.broker.start()
            self.broker.wait_bound()
            self._write_runtime()
            self._create_supervisors()
            for supervisor in self._supervisors.values():
                if supervisor.state == "stopped":
                    supervisor.start()
            self.delivery = Delivery(self, self.contexts, ("queued", "batch"))
            self.realtime = Delivery(self, self.contexts, ("realtime",), self.broker.progress_notifier())
            self.delivery.start()
            self.realtime.start()
            self._monitor = threading.Thread(target=self._monitor_loop, name="insights-monitor",
                                             daemon=True)
            self._monitor.start()
            if self._explicit_modules is None and self.config["modules.reload"]:
                self.reloader = Reloader(self.config["modules.paths"], self._reload_requests.put)
                self.reloader.start()
        except BaseException:
            self.stop()
            raise

    def _start_store(self) -> None:
        url = self.config["storage.mongo_url"]
        if not url:
            self._store = storemod.EmbeddedStore(self.paths.data)
            url = self._store.start()
        self.store_url = url
        self.client = storemod.connect(url)
        db = self.client[storemod.HOST_DB_NAME]
        # Cursors, dead letters and the seq counter live apart from the journaled log: the
        # embedded store keeps its sync setting per database, and a lost cursor update only
        # means a re-delivery.
        state = self.client[storemod.HOST_DB_NAME + "_state"]
        self.eventlog = EventLog(db, state, journal=self.config["storage.journal"])
        self.eventlog.ensure_indexes()
        self.cursors = Cursors(state)
        self.dead_letters = DeadLetters(state)
        self.dead_letters.resume()

    def _isolation(self):
        """:returns: a :class:`~hostd.isolation.Isolation` when sandboxes are isolated, else None."""
        mode = self.config["sandbox.isolation"]
        if mode not in ("auto", "off"):
            raise ValueError(f"sandbox.isolation must be auto or off, not {mode!r}")
        if mode == "off" or os.geteuid() != 0:
            log.warning("isolation: off (%s): sandboxes share hostd's uid, network and files",
                        "sandbox.isolation = off" if mode == "off" else "hostd is not root")
            return None
        isolation = Isolation(self.paths, self.config, self.store_url)
        log.info("isolation: per-module uids from %d, no network, store through a relay limited to"
                 " each module's database, private filesystem view", self.config["sandbox.uid_base"])
        return isolation

    def _write_runtime(self) -> None:
        runtime = {"config": self.config.as_dict(), "table_file": str(self.paths.table_file),
                   "ingest_endpoint": self.paths.ingest_endpoint,
                   "control_endpoint": self.paths.control_endpoint,
                   "control_key": self.control_key.hex(), "fs_master_key": self.fs_master_key.hex(),
                   "store_url": self.store_url}
        fd = os.open(self.paths.runtime_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(runtime, handle)

    def _create_supervisors(self) -> None:
        if self._explicit_modules is not None:
            found, errors = dict(self._explicit_modules), {}
        else:
            found, errors = discover_modules(self.config["modules.paths"])
        files = {name: properties_file(folder) for name, folder in found.items()}
        files.update({p.name: properties_file(p) for p in self._property_modules if p.name not in files})
        self.properties, property_errors = load_registry({n: f for n, f in files.items() if f})
        for name, error in property_errors.items():
            if name in found:
                errors[name] = error
            else:
                raise ModuleLoadError(error)
        self.properties_files = {n: str(f) for n, f in files.items() if f and n not in property_errors}
        for name, folder in {**found, **{n: None for n in errors}}.items():
            self._supervisors[name] = self._new_supervisor(name, folder, errors.get(name))
        self.publish()

    def _new_supervisor(self, name: str, folder, error: str | None = None) -> ModuleSupervisor:
        """A supervisor for one module folder (failed at once when ``error`` or its module.toml is bad)."""
        try:
            manifest_limits = read_manifest(folder)["limits"] if folder else {}
            limits = self.config.limits(manifest_limits, origin=f"{folder}/module.toml")
        except (ModuleLoadError, ValueError) as err:
            limits, error = self.config.limits(), error or str(err)
        supervisor = ModuleSupervisor(name, folder or Path("."), limits, self.paths, self.config,
                                      self.store_url, module_fs_key(self.fs_master_key, name),
                                      self._dirty.set, self.properties_files, self.cgroups,
                                      self.isolation, self.broker, getattr(self, "forkserver", None),
                                      self.placement)
        if error:
            supervisor.fail(error)
        return supervisor

    def reload_modules(self, names) -> None:
        """Start added, restart changed and stop removed module folders (hot reload).

        Other modules are not touched. A changed ``properties.py`` updates hostd's
        filters at once; other sandboxes see it when they next restart.
        """
        if self._explicit_modules is not None:
            return
        found, errors = discover_modules(self.config["modules.paths"])
        files = {name: properties_file(folder) for name, folder in found.items()}
        files.update({p.name: properties_file(p) for p in self._property_modules if p.name not in files})
        serving = [n for n in self.properties_files if n not in names]  # incumbents keep their claims
        self.properties, property_errors = load_registry({n: f for n, f in files.items() if f}, first=serving)
        self.properties_files = {n: str(f) for n, f in files.items() if f and n not in property_errors}
        self._realtime_filters.clear()
        for name in sorted(names):
            old = self._supervisors.get(name)
            if old is not None:
                old.stop()  # changed or removed: its process goes before anyone is told
                self.publish()
                del self._supervisors[name]
            if name not in found and name not in errors:
                self.placement.release(name)
                log.info("module %s removed", name)
                continue
            supervisor = self._new_supervisor(name, found.get(name), errors.get(name) or property_errors.get(name))
            if old is not None:
                supervisor.restarts = old.restarts
            self._supervisors[name] = supervisor
            if supervisor.state != "failed":
                supervisor.start()
        self.publish()

    def stop(self) -> None:
        """Stop sandboxes, threads and the store; release the data dir. Idempotent."""
        self._stopping.set()
        for attribute in ("reloader", "delivery", "realtime"):
            thread = getattr(self, attribute, None)
            if thread is not None:
                thread.stop()
                thread.join(10)
        for supervisor in list(self._supervisors.values()):
            supervisor.stop()
        if self._supervisors:
            self.publish()
        for attribute in ("broker", "ingest"):
            thread = getattr(self, attribute, None)
            if thread is not None:
                thread.stop()
                thread.join(5)
        if getattr(self, "contexts", None) is not None:
            # every thread using them has stopped; this also closes the wake-up sockets they left
            self.contexts.destroy(linger=0)
            self.contexts = None
        if self.client is not None:
            self.client.close()
            self.client = None
        if getattr(self, "forkserver", None) is not None:
            self.forkserver.stop()
            self.forkserver = None
        if getattr(self, "cgroups", None) is not None:
            self.cgroups.close()
        if getattr(self, "isolation", None) is not None:
            self.isolation.close()
        if self._store is not None:
            self._store.stop()
            self._store = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def _monitor_loop(self) -> None:
        while not self._stopping.is_set():
            try:  # reloads happen here, on the thread that spawns sandboxes (PDEATHSIG follows it)
                self.reload_modules(self._reload_requests.get_nowait())
            except queue.Empty:
                pass
            except Exception:
                log.exception("hot reload failed")
            for supervisor in list(self._supervisors.values()):
                try:
                    supervisor.tick()
                except Exception:
                    log.exception("supervising %s failed", supervisor.name)
            if self._dirty.wait(0.1):  # a state change is published at once
                self.publish()

    # -- module table ----------------------------------------------------------
    def publish(self) -> None:
        """Write the module table for the other processes (and refresh our snapshot)."""
        with self._table_lock:
            self._dirty.clear()
            table = {"modules": {name: s.record() for name, s in self._supervisors.items()},
                     "properties": self.properties.describe() if self.properties else [],
                     "published": time.time()}
            self._snapshot = Snapshot(table)
            write_table(self.paths.table_file, table)

    def snapshot(self) -> Snapshot:
        """:returns: the current table snapshot."""
        return self._snapshot

    def supervisor(self, name: str) -> ModuleSupervisor | None:
        """:returns: the supervisor of module ``name``."""
        return self._supervisors.get(name)

    def current_record(self, name: str) -> dict | None:
        """:returns: module ``name``'s up-to-date record."""
        supervisor = self._supervisors.get(name)
        return supervisor.record() if supervisor else None

    def running_handlers(self, modes=("realtime", "queued", "batch")):
        """Yield ``(record, handler description)`` for running modules' handlers of those modes."""
        for supervisor in list(self._supervisors.values()):
            if supervisor.state != "running":
                continue
            record = supervisor.record()
            for endpoint in record["endpoints"]:
                if endpoint["class"] == "handler" and (endpoint.get("options") or {}).get("mode", "queued") in modes:
                    yield record, endpoint

    def realtime_matches(self, events: list[dict], source: str) -> list[list[str]]:
        """:returns: ``[module, handler]`` of every running realtime handler matching one of ``events``."""
        matched = []
        for record, handler in self.running_handlers(("realtime",)):
            key = (record["name"], handler["name"], repr(handler.get("options")))
            matches = self._realtime_filters.get(key)
            if matches is None:
                matches = self._realtime_filters[key] = compile_filter(
                    (handler.get("options") or {}).get("filter"), record["name"], self.properties)
            if any(matches({"event": event, "source": source}) for event in events):
                matched.append([record["name"], handler["name"]])
        return matched

    def handler_position(self, module: str, handler: str) -> int | None:
        """:returns: a handler's acknowledged log position (None if unknown or not running)."""
        for thread in (self.delivery, self.realtime):
            position = thread.position(module, handler)
            if position is not None:
                return position
        return None

    def wait_delivered(self, module: str, seq: int, timeout_s: float) -> bool:
        """Block until every handler of ``module`` (all modes) is past ``seq``."""
        deadline = time.time() + timeout_s
        return all(thread.wait_delivered(module, seq, max(0.0, deadline - time.time()))
                   for thread in (self.delivery, self.realtime))

    def wait_ready(self, timeout_s: float = 60.0) -> bool:
        """Block until no module is starting or restarting. :returns: whether that happened."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if all(s.state not in ("starting", "restarting", "stopped") for s in self._supervisors.values()):
                return True
            time.sleep(0.02)
        return False

    # -- reports from sandboxes and threads ----------------------------------
    def on_ready(self, module: str, pid: int, endpoints: list, manifest: dict, confinement=None,
                 cpu=None) -> None:
        """A sandbox loaded its module: check its names do not collide with another module's."""
        supervisor = self._supervisors.get(module)
        if supervisor is None:
            return
        ours = {(e["class"], n) for e in endpoints if e["class"] in ("view", "query")
                for n in [e["name"], *e.get("aliases", [])]}
        for other in self._supervisors.values():
            if other is supervisor or not other.endpoints or other.state == "failed":
                continue
            theirs = {(e["class"], n) for e in other.endpoints
                      for n in [e["name"], *e.get("aliases", [])]}
            clash = sorted(ours & theirs)
            if clash:
                kind, name = clash[0]
                supervisor.fail(f"{kind} {name!r} is defined by both module {other.name!r}"
                                f" ({other.path}) and module {module!r} ({supervisor.path})")
                return
        for endpoint in endpoints:  # a new backfill=False handler starts at the head as of now
            options = endpoint.get("options") or {}
            if endpoint["class"] == "handler" and not options.get("backfill", True) \
                    and self.cursors.get(module, endpoint["name"]) is None:
                self.cursors.set(module, endpoint["name"], self.eventlog.head())
        supervisor.on_ready(pid, endpoints, manifest, confinement, cpu)

    def _on_appended(self, seq: int) -> None:
        for name in ("realtime", "delivery"):
            thread = getattr(self, name, None)
            if thread is not None:
                thread.notify(seq)

    def module_status(self) -> dict:
        """:returns: the ``/modules`` answer: each module's state, pid, errors and handler detail."""
        head = self.eventlog.head()
        out = {}
        for name, supervisor in sorted(self._supervisors.items()):
            record = supervisor.record()
            handlers = {s.name: s.stats(head)
                        for thread in (self.delivery, self.realtime) for s in thread.states(name)}
            out[name] = {key: record[key] for key in ("state", "pid", "restarts", "last_error", "confinement")}
            out[name].update(lag=sum(h["lag"] for h in handlers.values()),
                             handled=sum(h["handled"] for h in handlers.values()),
                             dead_letters=self.dead_letters.count(name), handlers=handlers,
                             crons={}, path=record["path"])
        return out
