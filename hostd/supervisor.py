"""Supervising one module's sandbox process.

States (SPEC §6) and their transitions::

    stopped -> starting          start()
    starting -> running          the sandbox reported ready
    starting/running -> restarting   the process died (or did not get ready in time)
    restarting -> crashloop      too many quick deaths in a row (still retried, slowly)
    restarting/crashloop -> starting when the backoff delay has passed
    starting -> failed           the module could not be loaded (not restarted)
    any -> stopped               stop()

The supervisor never blocks: :meth:`tick` is called periodically by the host's
monitor thread, and ``on_*`` methods by the broker thread when a sandbox reports.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sandbox import protocol

__all__ = ["ModuleSupervisor", "sandbox_environment"]

log = logging.getLogger("insights.supervisor")


def sandbox_environment() -> dict:
    """:returns: the scrubbed environment sandboxes (and the fork server) start with."""
    env = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "LANG", "LC_", "PATH", "TZ"))}
    env.update(PYTHONPATH=_sandbox_pythonpath(), MALLOC_ARENA_MAX="2", OPENBLAS_NUM_THREADS="1",
               MPLBACKEND="Agg", PYTHONUNBUFFERED="1", TMPDIR="/tmp", PYTHONDONTWRITEBYTECODE="1")
    return env


def _sandbox_pythonpath() -> str:
    import sandbox
    root = str(Path(sandbox.__file__).resolve().parents[1])
    existing = os.environ.get("PYTHONPATH")
    return root if not existing else f"{root}{os.pathsep}{existing}"


class ModuleSupervisor:
    """Starts, watches and restarts the sandbox of one module.

    :param name: the module's name.
    :param path: its folder.
    :param limits: its effective ``limits.*`` settings.
    :param paths: the host's :class:`hostd.host.HostPaths`.
    :param settings: the host's config.
    :param store_url: MongoDB URL the sandbox uses for ``db``.
    :param fs_key: the module's key for signing file URLs.
    :param on_change: called (without arguments) after every state change.
    :param properties_files: ``{module: properties.py}`` every sandbox loads for ``evt.<ns>.<name>``.
    :param cgroups: the host's :class:`~hostd.cgroups.CgroupManager` (or None).
    :param isolation: the host's :class:`~hostd.isolation.Isolation` (None: not isolated).
    :param broker: the host's :class:`~hostd.broker.Broker` (binds the module's upcall socket).
    :param forkserver: the host's :class:`~hostd.forkclient.ForkServer` (None: fresh interpreters).
    :param placement: the host's :class:`~hostd.placement.CpuPlacement` (None: not pinned).
    """

    def __init__(self, name, path, limits, paths, settings, store_url, fs_key: bytes, on_change,
                 properties_files=None, cgroups=None, isolation=None, broker=None, forkserver=None,
                 placement=None):
        self.name = name
        self.path = Path(path)
        self.limits = limits
        self._paths = paths
        self._settings = settings
        self._store_url = store_url
        self._fs_key = fs_key
        self._on_change = on_change
        self._properties_files = dict(properties_files or {})
        self._cgroups = cgroups
        self._isolation = isolation
        self._broker = broker
        self._forkserver = forkserver
        self._placement = placement
        self._cgroup = None
        self._counters = {"oom_kill": 0, "pids_max": 0}
        self.confinement: dict = {}
        #: the one CPU the running sandbox is pinned to (None: not pinned); callers' sockets follow it
        self.cpu: int | None = None
        self.key = protocol.new_key()
        #: the module's end of its upcall channel in hostd (remembers nonces: replays are refused)
        self.signer = protocol.Signer(self.key)
        self.state = "stopped"
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self.last_error: str | None = None
        self.endpoints: list = []
        self.manifest: dict = {}
        self.started_at: float | None = None
        self.ready_at: float | None = None
        self._quick_deaths = 0
        self._next_start = 0.0
        self._load_failed = False       # the sandbox reported load_failed (then exits with 3)
        self._kill_reason = None        # why hostd killed it, reported instead of the signal
        self._lock = threading.RLock()

    # -- what others see -----------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The sandbox's pid while it runs."""
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    @property
    def call_endpoint(self) -> str:
        """The sandbox's ``call`` socket."""
        return f"ipc://{self._paths.module_ipc(self.name) / 'call.sock'}"

    @property
    def upcall_endpoint(self) -> str:
        """hostd's end of the module's upcall channel."""
        return f"ipc://{self._paths.module_ipc(self.name) / 'upcall.sock'}"

    def record(self) -> dict:
        """:returns: this module's entry of the module table.

        Reads without the lock: a start in progress holds it while waiting for the broker,
        which must be able to answer ``/modules`` meanwhile.
        """
        return {"name": self.name, "path": str(self.path), "state": self.state, "pid": self.pid,
                "restarts": self.restarts, "last_error": self.last_error,
                "started_at": self.started_at, "call_endpoint": self.call_endpoint,
                "key": self.key.hex(), "endpoints": self.endpoints, "manifest": self.manifest,
                "limits": self.limits, "confinement": self.confinement, "cpu": self.cpu}

    # -- transitions ---------------------------------------------------------
    def _set_state(self, state: str) -> None:
        if state != self.state:
            log.info("module %s: %s -> %s", self.name, self.state, state)
            self.state = state
        self._on_change()

    def _spec(self) -> dict:
        data = self._paths.module_data(self.name)
        ipc = self._paths.module_ipc(self.name)
        ipc.mkdir(mode=0o700, parents=True, exist_ok=True)
        (data / "fs").mkdir(parents=True, exist_ok=True)
        store_url, isolation, uid = self._store_url, {}, None
        if self._isolation is not None:
            store_url, isolation = self._isolation.prepare(self.name, self.path, self._properties_files)
            uid = isolation["uid"]
        if self._broker is not None:
            self._broker.ensure_upcall(self.name, self.upcall_endpoint, uid)
        return {
            "module": self.name, "module_dir": str(self.path), "key": self.key.hex(),
            "call_endpoint": self.call_endpoint, "upcall_endpoint": self.upcall_endpoint,
            "store_url": store_url, "db_name": f"mod_{self.name}",
            "fs_root": str(data / "fs"), "fs_key": self._fs_key.hex(),
            "parent_pid": self._parent_pid(), "log_level": self._settings["logging.level"],
            "call_timeout_s": self.limits["call_timeout_s"],
            "properties_files": self._properties_files,
            "confinement": {**self._confinement_plan(), **isolation},
        }

    def _confinement_plan(self) -> dict:
        memory = self.limits["memory_mb"]
        if self._cgroups is not None and self._cgroups.available:
            if self._cgroup is not None:
                self._cgroup.remove()
            self._cgroup = self._cgroups.create(self.name, memory, self.limits["max_processes"])
        if self._cgroup is not None:
            self._counters = self._cgroup.counters()
        # Address space counts virtual memory (~450 MiB for numpy+zmq+pymongo at rest): a
        # backstop well above the cgroup's real limit, or the only limit without cgroups.
        address_space = memory * 4 + 1024 if self._cgroup is not None else memory + 512
        return {"memory_mb": memory, "max_processes": self.limits["max_processes"],
                "max_open_files": self.limits["max_open_files"], "address_space_mb": address_space,
                "cgroup_procs": self._cgroup.procs_files if self._cgroup is not None else [],
                "cpu": self._placement.assign(self.name) if self._placement is not None else None}

    def _use_forkserver(self) -> bool:
        return self._forkserver is not None and self._forkserver.alive

    def _parent_pid(self) -> int:
        return self._forkserver.process.pid if self._use_forkserver() else os.getpid()

    def start(self) -> None:
        """Spawn the sandbox (a fresh interpreter running ``python -m sandbox``)."""
        with self._lock:
            if self.process is not None and self.process.poll() is None:
                return
            spec_path = self._paths.run / f"{self.name}.spec.json"
            os.close(os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))  # 0600 first
            data = self._paths.module_data(self.name)
            data.mkdir(parents=True, exist_ok=True)
            env = sandbox_environment()
            env.update(MPLCONFIGDIR=str(data / "mpl"), HOME=str(data), USER=f"insights-{self.name}")
            try:
                spec = self._spec()
            except Exception as err:  # e.g. the store relay or the upcall socket could not be set up
                log.exception("module %s: cannot prepare its sandbox", self.name)
                self.last_error = f"cannot prepare the sandbox: {err}"
                self._died(time.time())
                return
            with open(spec_path, "w", encoding="utf-8") as handle:
                json.dump(spec, handle)
            log_file = open(self._paths.logs / f"{self.name}.log", "ab")
            try:
                # A -> starting
                if self._use_forkserver():
                    self.process = self._forkserver.spawn(str(spec_path), env, str(data), log_file.fileno())
                else:
                    self.process = subprocess.Popen([sys.executable, "-m", "sandbox", str(spec_path)],
                                                    stdin=subprocess.DEVNULL, stdout=log_file,
                                                    stderr=subprocess.STDOUT, cwd=data, env=env,
                                                    close_fds=True)
            finally:
                log_file.close()
            self.started_at = time.time()
            self.ready_at = None
            self._load_failed = False
            self._set_state("starting")

    def on_ready(self, pid: int, endpoints: list, manifest: dict, confinement: dict | None = None,
                 cpu: int | None = None) -> bool:
        """The sandbox loaded its module. :returns: False if the report is stale."""
        with self._lock:
            if self.pid != pid or self.state != "starting":
                return False
            self.endpoints, self.manifest = endpoints, manifest
            self.confinement = dict(confinement or {})
            self.cpu = cpu if isinstance(cpu, int) and not isinstance(cpu, bool) else None
            self.ready_at = time.time()
            self._set_state("running")  # starting -> running
            return True

    def on_load_failed(self, text: str) -> None:
        """The module could not be loaded: remember why; :meth:`tick` marks it failed."""
        with self._lock:
            self.last_error = text
            self._load_failed = True

    def fail(self, reason: str) -> None:
        """Stop the sandbox and mark the module failed (e.g. an endpoint name collision)."""
        with self._lock:
            self.last_error = reason
            self._kill()
            self._set_state("failed")  # any -> failed

    def on_error(self, text: str) -> None:
        """A module function raised: keep its traceback for ``/modules``."""
        with self._lock:
            self.last_error = text
            self._on_change()

    def tick(self, now: float | None = None) -> None:
        """Notice deaths, start timeouts and due restarts."""
        now = time.time() if now is None else now
        with self._lock:
            if self.state in ("stopped", "failed"):
                return
            if self.state in ("restarting", "crashloop"):
                if now >= self._next_start:
                    self.start()  # restarting/crashloop -> starting
                return
            status = self.process.poll() if self.process is not None else -1
            if status is None:
                if self.state == "starting" and now - self.started_at > self.limits["start_timeout_s"]:
                    self.last_error = f"not ready after {self.limits['start_timeout_s']:g} s"
                    self._kill()  # may wait for the process: the backoff counts from its end
                    self._died(time.time())
                return
            if status == protocol.EXIT_LOAD_FAILED and self._load_failed:
                self.process = None
                self._set_state("failed")  # starting -> failed
                return
            log.warning("module %s: sandbox exited with status %s", self.name, status)
            if self._kill_reason is not None:
                self.last_error, self._kill_reason = self._kill_reason, None
            elif self.last_error is None or self.state == "running":
                self.last_error = self._death_reason(status)
            self._died(now)

    def _death_reason(self, status: int) -> str:
        """Why the sandbox died, from the cgroup counters when there are any."""
        if self._cgroup is not None:
            counters = self._cgroup.counters()
            if counters["oom_kill"] > self._counters["oom_kill"]:
                return f"killed: over its memory limit ({self.limits['memory_mb']} MiB)"
            if counters["pids_max"] > self._counters["pids_max"] and status != 0:
                return (f"sandbox exited with status {status} after hitting its process limit"
                        f" ({self.limits['max_processes']})")
        if status == -signal.SIGXCPU:
            return "killed: over its CPU limit"
        if status < 0:
            try:
                return f"sandbox process killed by {signal.Signals(-status).name} (status {status})"
            except ValueError:
                pass
        return f"sandbox process exited with status {status}"

    def _died(self, now: float) -> None:
        uptime = now - (self.ready_at or now)
        if self.ready_at is not None and uptime >= self._settings["supervisor.stable_after_s"]:
            self._quick_deaths = 0
        self._quick_deaths += 1
        self.restarts += 1
        delay = min(self._settings["supervisor.backoff_initial_s"] * 2 ** (self._quick_deaths - 1),
                    self._settings["supervisor.backoff_max_s"])
        self._next_start = now + delay
        self.process = None
        crashloop = self._quick_deaths >= self._settings["supervisor.crashloop_restarts"]
        self._set_state("crashloop" if crashloop else "restarting")

    def kill_for_timeout(self, reason: str) -> None:
        """A call exceeded its deadline: kill the sandbox; :meth:`tick` restarts it."""
        with self._lock:
            if self.state == "running":
                self._kill_reason = f"killed: {reason}"
                self._kill(graceful=False)

    def _kill(self, graceful: bool = True, timeout_s: float = 3.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        if graceful:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
                return
            except subprocess.TimeoutExpired:
                pass
        process.kill()
        process.wait()

    def stop(self) -> None:
        """Stop the sandbox (SIGTERM, then SIGKILL) and mark the module stopped."""
        with self._lock:
            self._kill()
            self.process = None
            if self._cgroup is not None:
                self._cgroup.remove()  # with whatever it left behind
                self._cgroup = None
            if self._isolation is not None:
                self._isolation.release(self.name)
            self._set_state("stopped")  # any -> stopped
