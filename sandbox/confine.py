"""A sandbox confining itself, first thing after it starts.

:func:`apply` runs before the module is imported: it joins the cgroups hostd
prepared (memory and process limits), sets rlimits on itself (open files, no
core dumps, address space as a backstop, processes when not root) and asks to
die with hostd. It returns what it enforced, which hostd reports in ``/modules``.
"""
from __future__ import annotations

import ctypes
import os
import resource
import signal

__all__ = ["apply"]

_MB = 1024 * 1024
PR_SET_PDEATHSIG = 1


def _set(limit: int, value: int) -> None:
    soft, hard = resource.getrlimit(limit)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(limit, (value, value))


def apply(plan: dict) -> dict:
    """Confine this process according to ``plan`` (the ``confinement`` part of the spec).

    :param plan: ``memory_mb``, ``max_open_files``, ``max_processes``, ``cgroup_procs``
        (``cgroup.procs`` files to join), ``address_space_mb`` (backstop).
    :returns: ``{mechanism: description}`` of what is enforced.
    """
    enforced = {}
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        enforced["pdeathsig"] = "dies with hostd"
    except (OSError, AttributeError):
        pass
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
    _set(resource.RLIMIT_CORE, 0)
    enforced["core"] = "no core dumps"
    if plan.get("max_open_files"):
        _set(resource.RLIMIT_NOFILE, int(plan["max_open_files"]))
        enforced["open_files"] = str(plan["max_open_files"])
    if plan.get("address_space_mb"):
        _set(resource.RLIMIT_AS, int(plan["address_space_mb"]) * _MB)
        enforced["address_space"] = f"{plan['address_space_mb']} MiB"
    if plan.get("max_processes") and os.getuid() != 0:
        # counted per uid (threads included): only meaningful with a uid of its own
        _set(resource.RLIMIT_NPROC, int(plan["max_processes"]))
        enforced["processes"] = str(plan["max_processes"])
    return enforced
