"""Launching sandbox processes: the spec, the confinement plan, the process itself.

A :class:`Launcher` holds what every sandbox of a host shares (folders, store,
cgroups, isolation, the fork server, CPU placement, the broker's upcall
binding). :meth:`Launcher.launch` prepares one module's sandbox and starts it,
returning a :class:`Sandbox`: the process with its cgroup, which can tell why it
died. The supervisor decides when to launch and when to kill; this module only
knows how.
"""
from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from sandbox.errors import ModuleLoadError
from sandbox.memoize import owner_prefix

__all__ = ["Launcher", "Sandbox", "sandbox_environment"]


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


def _layer_answer(output: bytes) -> dict | None:
    """:returns: the answer a layer probe printed last, or None when it printed none."""
    from sandbox.describe import RESULT_PREFIX
    for line in reversed(output.decode("utf-8", "replace").splitlines()):
        if line.startswith(RESULT_PREFIX):
            try:
                return json.loads(line[len(RESULT_PREFIX):])
            except ValueError:
                return None
    return None


class Sandbox:
    """One started sandbox process and its cgroup.

    :param process: a ``Popen`` or :class:`~hostd.forkclient.ForkedProcess`.
    :param cgroup: its :class:`~hostd.cgroups.ModuleCgroup` (or None).
    :param limits: the limits it runs under.
    """

    def __init__(self, process, cgroup, limits: dict, on_gone=None):
        self.process = process
        self._on_gone = on_gone
        self._cgroup = cgroup
        self._counters = cgroup.counters() if cgroup is not None else {"oom_kill": 0, "pids_max": 0}
        self._limits = limits

    @property
    def pid(self) -> int | None:
        """The process id while it runs, else None."""
        return self.process.pid if self.process.poll() is None else None

    def poll(self) -> int | None:
        """:returns: the exit status, or None while it runs."""
        return self.process.poll()

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL it and reap it."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def death_reason(self, status: int) -> str:
        """:returns: why it died, from the cgroup counters when there are any."""
        if self._cgroup is not None:
            counters = self._cgroup.counters()
            if counters["oom_kill"] > self._counters["oom_kill"]:
                return f"killed: over its memory limit ({self._limits['memory_mb']} MiB)"
            if counters["pids_max"] > self._counters["pids_max"] and status != 0:
                return (f"sandbox exited with status {status} after hitting its process limit"
                        f" ({self._limits['max_processes']})")
        if status == -signal.SIGXCPU:
            return "killed: over its CPU limit"
        if status < 0:
            try:
                return f"sandbox process killed by {signal.Signals(-status).name} (status {status})"
            except ValueError:
                pass
        return f"sandbox process exited with status {status}"

    def cleanup(self) -> None:
        """Remove its cgroup, with whatever it left behind, and release what it held (after it exited)."""
        if self._cgroup is not None:
            self._cgroup.remove()
            self._cgroup = None
        if self._on_gone is not None:
            on_gone, self._on_gone = self._on_gone, None
            on_gone()


class Launcher:
    """Starts the sandboxes of one host.

    :param paths: the host's :class:`~hostd.paths.HostPaths`.
    :param settings: the host's config.
    :param store_url: MongoDB URL sandboxes use for ``db`` (when not isolated).
    :param bind_upcall: ``bind_upcall(module, endpoint, uid)``: have the broker listen at
        a module's upcall endpoint (the broker's :meth:`~hostd.broker.Broker.ensure_upcall`).
    :param cgroups: the host's :class:`~hostd.cgroups.CgroupManager` (or None).
    :param isolation: the host's :class:`~hostd.isolation.Isolation` (None: not isolated).
    :param forkserver: the host's :class:`~hostd.forkclient.ForkServer` (None: fresh interpreters).
    :param placement: the host's :class:`~hostd.placement.CpuPlacement` (None: not pinned).
    :param release_leases: ``release_leases(module, owner_prefix)``: end the memoize leases a
        dead sandbox held (see :func:`sandbox.memoize.owner_prefix`).
    """

    def __init__(self, paths, settings, store_url: str, bind_upcall=None, cgroups=None, isolation=None,
                 forkserver=None, placement=None, release_leases=None):
        self._paths = paths
        self._settings = settings
        self._store_url = store_url
        self._bind_upcall = bind_upcall
        self._cgroups = cgroups
        self._isolation = isolation
        self._forkserver = forkserver
        self._placement = placement
        self._release_leases = release_leases
        #: the data-layer catalog every sandbox gets (see :meth:`~hostd.catalog.PropertyCatalog.for_sandboxes`)
        self.layers: dict = {"layers": [], "failed": {}}

    def layer_files(self) -> list[str]:
        """:returns: the ``properties.py`` of every data layer in the catalog (sandboxes read them)."""
        return [layer["file"] for layer in self.layers["layers"] if layer.get("file")]

    def call_endpoint(self, module: str) -> str:
        """:returns: a module's ``call`` socket (the sandbox binds it)."""
        return f"ipc://{self._paths.module_ipc(module) / 'call.sock'}"

    def upcall_endpoint(self, module: str) -> str:
        """:returns: hostd's end of a module's upcall channel."""
        return f"ipc://{self._paths.module_ipc(module) / 'upcall.sock'}"

    def launch(self, module: str, folder: Path, limits: dict, key: bytes, fs_key: bytes) -> Sandbox:
        """Prepare a module's sandbox and start it.

        :raises Exception: it could not be prepared (store relay, upcall socket, cgroup...).
        """
        data = self._paths.module_data(module)
        (data / "fs").mkdir(parents=True, exist_ok=True)
        spec_path = self._paths.run / f"{module}.spec.json"
        os.close(os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))  # 0600 first
        cgroup = self._cgroup(module, limits)
        try:
            spec = self._spec(module, folder, limits, key, fs_key, cgroup)
        except BaseException:
            if cgroup is not None:
                cgroup.remove()
            raise
        with open(spec_path, "w", encoding="utf-8") as handle:
            json.dump(spec, handle)
        env = sandbox_environment()
        env.update(MPLCONFIGDIR=str(data / "mpl"), HOME=str(data), USER=f"insights-{module}")
        with open(self._paths.logs / f"{module}.log", "ab") as log_file:
            if self._forkserver is not None and self._forkserver.alive:
                process = self._forkserver.spawn(str(spec_path), env, str(data), log_file.fileno())
            else:
                process = subprocess.Popen([sys.executable, "-P", "-m", "sandbox", str(spec_path)],
                                           stdin=subprocess.DEVNULL, stdout=log_file,
                                           stderr=subprocess.STDOUT, cwd=data, env=env, close_fds=True)
        on_gone = None
        if self._release_leases is not None:
            prefix = owner_prefix(self.call_endpoint(module), process.pid)
            on_gone = functools.partial(self._release_leases, module, prefix)
        return Sandbox(process, cgroup, limits, on_gone)

    def describe_layer(self, identity: str, folder: Path | None, layer: dict, limits: dict) -> dict:
        """Have a confined probe import one data layer and say what it declares.

        :param identity: the module whose sandbox identity the probe has.
        :param folder: that module's folder (None for an installed package).
        :param layer: ``{"origin", "file"}``.
        :returns: ``{"properties": [...], "sources": [...], "confinement": {...}}``.
        :raises ModuleLoadError: the layer raised, ended the process or did not finish in time.
        """
        data = self._paths.module_data(identity)
        data.mkdir(parents=True, exist_ok=True)
        spec_path = self._paths.run / f"{identity}.describe.json"
        os.close(os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        isolation = {}
        if self._isolation is not None:
            isolation = self._isolation.prepare(identity, folder or data, [layer["file"]] if layer.get("file") else [])[1]
        plan = {**self._confinement_plan(identity, limits, None), **isolation, "cpu": None,
                "parent_pid": os.getpid()}
        with open(spec_path, "w", encoding="utf-8") as handle:
            json.dump({"module": identity, "layer": layer, "confinement": plan}, handle)
        env = sandbox_environment()
        env.update(HOME=str(data), USER=f"insights-{identity}")
        where = layer.get("file") or layer["origin"]
        timeout = limits["start_timeout_s"]
        with open(self._paths.logs / f"{identity}.log", "ab") as log_file:
            process = subprocess.Popen([sys.executable, "-P", "-m", "sandbox.describe", str(spec_path)],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_file,
                                       cwd=data, env=env, close_fds=True)
            try:
                output, _ = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                raise ModuleLoadError(f"{where} did not finish importing within {timeout:g} s"
                                      " (limits.start_timeout_s); the probe importing it was killed") from None
        answer = _layer_answer(output)
        if answer is None:
            raise ModuleLoadError(f"{where} ended the process importing it (exit status {process.returncode})")
        if "error" in answer:
            raise ModuleLoadError(f"{where} failed to load: {answer['error']}")
        return answer

    def release(self, module: str) -> None:
        """The module is gone for good (removed or stopped): give back its uid relay and CPU."""
        if self._isolation is not None:
            self._isolation.release(module)

    def forget(self, module: str) -> None:
        """The module was removed or failed: its CPU goes to the others."""
        if self._placement is not None:
            self._placement.release(module)

    def _cgroup(self, module: str, limits: dict):
        if self._cgroups is None or not self._cgroups.available:
            return None
        return self._cgroups.create(module, limits["memory_mb"], limits["max_processes"])

    def _spec(self, module, folder, limits, key, fs_key, cgroup) -> dict:
        ipc = self._paths.module_ipc(module)
        ipc.mkdir(mode=0o700, parents=True, exist_ok=True)
        store_url, isolation, uid = self._store_url, {}, None
        if self._isolation is not None:
            store_url, isolation = self._isolation.prepare(module, folder, self.layer_files())
            uid = isolation.get("uid")
        if self._bind_upcall is not None:
            self._bind_upcall(module, self.upcall_endpoint(module), uid)
        forked = self._forkserver is not None and self._forkserver.alive
        parent_pid = self._forkserver.process.pid if forked else os.getpid()
        return {
            "module": module, "module_dir": str(folder), "key": key.hex(),
            "call_endpoint": self.call_endpoint(module), "upcall_endpoint": self.upcall_endpoint(module),
            "store_url": store_url, "db_name": f"mod_{module}",
            "fs_root": str(self._paths.module_data(module) / "fs"), "fs_key": fs_key.hex(),
            "fs_backend": self._settings["storage.fs"], "fs_mb": limits["fs_mb"],
            "parent_pid": parent_pid,
            "log_level": self._settings["logging.level"],
            "call_timeout_s": limits["call_timeout_s"],
            "layers": self.layers,
            "confinement": {**self._confinement_plan(module, limits, cgroup), **isolation,
                            "parent_pid": parent_pid},
        }

    def _confinement_plan(self, module: str, limits: dict, cgroup) -> dict:
        memory = limits["memory_mb"]
        # Address space counts virtual memory (~450 MiB for numpy+zmq+pymongo at rest): a
        # backstop well above the cgroup's real limit, or the only limit without cgroups.
        address_space = memory * 4 + 1024 if cgroup is not None else memory + 512
        return {"memory_mb": memory, "max_processes": limits["max_processes"],
                "max_open_files": limits["max_open_files"], "address_space_mb": address_space,
                "cgroup_procs": cgroup.procs_files if cgroup is not None else [],
                "cpu": self._placement.assign(module) if self._placement is not None else None}
