"""Per-sandbox cgroups (v1 memory and pids controllers), when hostd runs as root.

Layout detection: this machine kind has a hybrid layout (v1 ``memory`` and
``pids`` hierarchies under ``/sys/fs/cgroup``). Each sandbox gets
``<own cgroup>/insights-<hostd pid>-<host number>/<module>`` in both, with
``memory.limit_in_bytes`` and ``pids.max``; the sandbox joins them itself. After
a death, the counters tell why (``oom_kill`` → over memory, ``pids.events max``
→ process limit). Without root or without these hierarchies hostd runs without
cgroups and says so.
"""
from __future__ import annotations

import itertools
import logging
import os
import signal
import time
from pathlib import Path

__all__ = ["CgroupManager", "ModuleCgroup"]

log = logging.getLogger("insights.cgroups")
_ROOT = Path("/sys/fs/cgroup")


def _own_path(controller: str) -> str | None:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                return path
    except OSError:
        pass
    return None


class ModuleCgroup:
    """The memory and pids cgroups of one module's sandbox."""

    def __init__(self, dirs: dict):
        self.dirs = dirs  # controller -> Path

    @property
    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files the sandbox writes its pid to."""
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def _read(self, controller: str, name: str) -> str:
        try:
            return (self.dirs[controller] / name).read_text()
        except (OSError, KeyError):
            return ""

    def counters(self) -> dict:
        """:returns: ``{"oom_kill": n, "pids_max": n}``: the limits hit so far."""
        oom = pids = 0
        for line in self._read("memory", "memory.oom_control").splitlines():
            if line.startswith("oom_kill "):
                oom = int(line.split()[1])
        for line in self._read("pids", "pids.events").splitlines():
            if line.startswith("max "):
                pids = int(line.split()[1])
        return {"oom_kill": oom, "pids_max": pids}

    def kill_all(self) -> None:
        """SIGKILL every process left in the cgroup (escaped children included)."""
        for _ in range(20):
            pids = {int(p) for d in self.dirs.values() for p in self._read_procs(d)}
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)

    @staticmethod
    def _read_procs(folder: Path) -> list[str]:
        try:
            return (folder / "cgroup.procs").read_text().split()
        except OSError:
            return []

    def remove(self) -> None:
        """Kill what is left and remove the cgroups."""
        self.kill_all()
        for folder in self.dirs.values():
            try:
                folder.rmdir()
            except OSError:
                pass


class CgroupManager:
    """Creates and sweeps the sandboxes' cgroups of one hostd."""

    _instances = itertools.count(1)

    def __init__(self):
        self._instance = next(self._instances)
        self.bases: dict = {}
        self.reason = None
        if os.geteuid() != 0:
            self.reason = "hostd is not root"
            return
        for controller in ("memory", "pids"):
            own = _own_path(controller)
            mount = _ROOT / controller
            if own is None or not mount.is_dir():
                self.reason = f"no cgroup v1 {controller} hierarchy"
                self.bases = {}
                return
            # one folder per host: two hosts in one process must not share (or remove) each other's
            self.bases[controller] = mount / own.lstrip("/") / f"insights-{os.getpid()}-{self._instance}"
        try:
            for controller, base in self.bases.items():
                self._sweep(base.parent)
                base.mkdir(exist_ok=True)
        except OSError as err:
            self.reason = f"cannot create cgroups: {err}"
            self.bases = {}

    def log_state(self) -> None:
        """Say in the log whether sandboxes get cgroups, and if not, why."""
        if self.available:
            log.info("confinement: per-sandbox cgroups (memory, processes) and rlimits")
        else:
            log.warning("confinement: no cgroups (%s); memory is limited by address space only,"
                        " processes only when sandboxes have a uid of their own", self.reason)

    @property
    def available(self) -> bool:
        """Whether sandboxes get cgroups."""
        return bool(self.bases)

    @staticmethod
    def _sweep(parent: Path) -> None:
        """Remove cgroups left by a hostd that died (``insights-<dead pid>``)."""
        for stale in parent.glob("insights-*"):
            try:
                pid = int(stale.name.split("-")[1])
                os.kill(pid, 0)
                continue  # that hostd lives
            except (ValueError, ProcessLookupError):
                pass
            except PermissionError:
                continue
            for child in stale.iterdir():
                if child.is_dir():
                    ModuleCgroup({"x": child}).remove()
            try:
                stale.rmdir()
            except OSError:
                pass

    def create(self, module: str, memory_mb: int, max_processes: int) -> ModuleCgroup | None:
        """:returns: fresh cgroups for a sandbox with those limits (None without cgroups)."""
        if not self.available:
            return None
        dirs = {}
        try:
            for controller, base in self.bases.items():
                folder = base / module
                if folder.exists():
                    ModuleCgroup({controller: folder}).remove()
                folder.mkdir()
                dirs[controller] = folder
            (dirs["memory"] / "memory.limit_in_bytes").write_text(str(memory_mb * 1024 * 1024))
            (dirs["pids"] / "pids.max").write_text(str(max_processes))
        except OSError as err:
            log.warning("cgroups for %s: %s", module, err)
            ModuleCgroup(dirs).remove()
            return None
        return ModuleCgroup(dirs)

    def close(self) -> None:
        """Remove this hostd's cgroup folders (sandboxes already stopped)."""
        for base in self.bases.values():
            for child in list(base.iterdir()) if base.is_dir() else []:
                if child.is_dir():
                    ModuleCgroup({"x": child}).remove()
            try:
                base.rmdir()
            except OSError:
                pass
