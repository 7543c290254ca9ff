"""A sandbox confining itself, first thing after it starts.

:func:`apply` runs before the module is imported: it joins the cgroups hostd
prepared (memory and process limits); when hostd runs as root it isolates
itself (new mount, network and IPC namespaces; ``/root``, ``/tmp``, the modules
dirs and the data dir covered by empty tmpfs with only what the module needs
bound back, its own code read-only; then its own unprivileged uid); it sets
rlimits on itself (open files, no core dumps, address space as a backstop,
processes) and asks to die with hostd. It returns what it enforced, which hostd
reports in ``/modules``; a step that fails is reported, never fatal.
"""
from __future__ import annotations

import ctypes
import os
import resource
import signal

__all__ = ["apply"]

_MB = 1024 * 1024
PR_SET_PDEATHSIG = 1
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWNET = 0x00020000, 0x08000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV = 0x1, 0x2, 0x4
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
_libc = ctypes.CDLL(None, use_errno=True)


def _ok(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype=None, flags=0, data=None) -> None:
    def encode(text):
        return text.encode() if text else None
    _ok(_libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data)),
        f"mount {target}")


def _bind(source: str, target: str, readonly: bool) -> None:
    _mount(source, target, flags=MS_BIND | MS_REC)
    if readonly:
        _mount(None, target, flags=MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _cover(top: str, keep: dict, mode: str) -> None:
    """Mount an empty tmpfs on ``top``, then bind back the paths of ``keep`` ({path: readonly}) under it."""
    inside = {p: ro for p, ro in keep.items() if p.startswith(top + "/") and os.path.exists(p)}
    inside = {p: ro for p, ro in inside.items() if not any(p.startswith(q + "/") for q in inside if q != p)}
    handles = {p: os.open(p, os.O_PATH) for p in inside}  # grabbed before they are hidden
    try:
        _mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, f"size=64m,mode={mode}")
        for path, readonly in inside.items():
            source = f"/proc/self/fd/{handles[path]}"
            if os.path.isdir(source):
                os.makedirs(path, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                open(path, "a").close()
            _bind(source, path, readonly)
    finally:
        for handle in handles.values():
            os.close(handle)


def _isolate(plan: dict) -> dict:
    """New namespaces, private mounts, then the module's own uid. :returns: what was enforced."""
    _ok(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC), "unshare")
    enforced = {"network": "no network (own namespace): the store only through hostd's relay"}
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    keep = {path: bool(readonly) for path, readonly in plan.get("keep", [])}
    for top, mode in sorted(plan.get("hide", []), key=lambda item: len(item[0])):
        if os.path.isdir(top):
            _cover(top, keep, mode)
    for path, readonly in keep.items():  # its own code read-only wherever it lives
        if readonly and os.path.exists(path) and not any(path.startswith(t + "/") for t, _ in plan["hide"]):
            _bind(path, path, True)
    enforced["filesystem"] = "sees only its own folders; its code read-only"
    uid, gid = plan["uid"], plan["gid"]
    os.chdir(plan.get("workdir") or "/")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    enforced["uid"] = str(uid)
    return enforced


def _set(limit: int, value: int) -> None:
    soft, hard = resource.getrlimit(limit)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(limit, (value, value))


def apply(plan: dict) -> dict:
    """Confine this process according to ``plan`` (the ``confinement`` part of the spec).

    :param plan: ``memory_mb``, ``max_open_files``, ``max_processes``, ``cgroup_procs``
        (``cgroup.procs`` files to join), ``address_space_mb`` (backstop), ``cpu`` (the
        one CPU to run on; threads started afterwards, ZeroMQ's among them, inherit it).
    :returns: ``{mechanism: description}`` of what is enforced.
    """
    enforced = {}
    joined = []
    for procs in plan.get("cgroup_procs") or []:
        try:
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))
            joined.append(procs)
        except OSError:
            continue
    if joined:
        enforced["cgroups"] = f"memory {plan.get('memory_mb')} MiB, {plan.get('max_processes')} processes"
    if plan.get("isolate"):
        try:
            enforced.update(_isolate(plan))
        except OSError as err:
            enforced["isolation"] = f"unavailable: {err}"
    if plan.get("cpu") is not None:
        try:
            os.sched_setaffinity(0, {int(plan["cpu"])})
            enforced["cpu"] = f"runs on CPU {plan['cpu']}"
        except OSError as err:  # e.g. that CPU went offline: run anywhere
            enforced["cpu"] = f"not pinned: {err}"
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after the uid change, which clears it
    enforced["pdeathsig"] = "dies with hostd"
    _set(resource.RLIMIT_CORE, 0)
    enforced["core"] = "no core dumps"
    if plan.get("max_open_files"):
        _set(resource.RLIMIT_NOFILE, int(plan["max_open_files"]))
        enforced["open_files"] = str(plan["max_open_files"])
    if plan.get("address_space_mb"):
        _set(resource.RLIMIT_AS, int(plan["address_space_mb"]) * _MB)
        enforced["address_space"] = f"{plan['address_space_mb']} MiB"
    if plan.get("max_processes") and "uid" in enforced:
        # counted per uid (threads included): only meaningful with a uid of its own
        _set(resource.RLIMIT_NPROC, int(plan["max_processes"]))
        enforced["processes"] = str(plan["max_processes"])
    return enforced
