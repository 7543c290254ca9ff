"""Which CPU each sandbox runs on.

A call crosses four threads: the caller, its ZeroMQ I/O thread, the sandbox's
I/O thread and the sandbox's own thread. When two of them that wake each other
sit on different CPUs, the wakeup is an inter-processor interrupt, which on a
virtual machine costs several times a wakeup on the same CPU (measured here: a
bare ZeroMQ round trip takes about 30 µs within one CPU and 90 to 130 µs across
two). A sandbox runs one Python thread, so pinning it, and with it the I/O
thread ZeroMQ starts afterwards, to one CPU costs it nothing and keeps its half
of every call on that CPU. Sandboxes are spread over hostd's CPUs, the CPU
holding the fewest sandboxes first.
"""
from __future__ import annotations

import os
import threading

__all__ = ["CpuPlacement"]


class CpuPlacement:
    """Hands out one CPU per module, keeping it across restarts.

    :param enabled: ``False`` gives every module ``None`` (not pinned).
    :param cpus: the CPUs to use (default: those hostd may run on).
    """

    def __init__(self, enabled: bool = True, cpus=None):
        self._cpus = sorted(cpus if cpus is not None else os.sched_getaffinity(0)) if enabled else []
        self._assigned: dict[str, int] = {}
        self._lock = threading.Lock()

    def assign(self, module: str) -> int | None:
        """:returns: the CPU of ``module`` (the same one each time), or ``None`` when not pinning."""
        if not self._cpus:
            return None
        with self._lock:
            if module not in self._assigned:
                load = {cpu: 0 for cpu in self._cpus}
                for cpu in self._assigned.values():
                    load[cpu] += 1
                self._assigned[module] = min(self._cpus, key=lambda cpu: (load[cpu], cpu))
            return self._assigned[module]

    def release(self, module: str) -> None:
        """Forget ``module`` (removed): its CPU counts one sandbox less."""
        with self._lock:
            self._assigned.pop(module, None)
