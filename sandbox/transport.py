"""ZeroMQ contexts for the channels between hostd and its sandboxes.

Every process that speaks the protocol (a sandbox, a web worker, the host, the
harness) makes its contexts here: :func:`new_context` for one, :class:`Contexts`
for a caller of sandboxes, which keeps one context per CPU a sandbox runs on.

Why not a plain ``zmq.Context()``: one call crosses four hand-offs between a
thread and its context's I/O thread (web worker -> its I/O thread -> the
sandbox's I/O thread -> the sandbox -> and back). Under the default policy a
woken I/O thread preempts the thread that woke it, so each hand-off costs an
extra pair of context switches, and on a virtual machine a context switch is
expensive. Under ``SCHED_BATCH`` a woken thread waits for the waker to block or
for the next tick instead; it still gets its fair share of the CPU. Measured on
the query round trip at 16 connections (``bench/query_roundtrip.py``): about
10% more requests/s, the same latency at one connection.

Why one context per CPU: a sandbox pinned to a CPU (``sandbox.pin_cpu``) has its
I/O thread there too. A caller whose socket to it belongs to a context whose I/O
thread runs on that same CPU hands frames over without waking another CPU: about
8% more requests/s again, and a little less latency.
"""
from __future__ import annotations

import os
import threading

import zmq

__all__ = ["new_context", "batch_policy_allowed", "Contexts"]


def batch_policy_allowed() -> bool:
    """:returns: whether threads started from this one may run under ``SCHED_BATCH``.

    Tried on the calling thread, then put back. ``False`` off Linux, where the
    calling thread does not run under the default policy (whoever started us
    chose realtime or idle scheduling: the I/O threads then inherit that), or
    where the change is refused (a seccomp filter, say). libzmq aborts the whole
    process when it cannot apply the policy it was given, hence the trial.
    """
    if not hasattr(os, "SCHED_BATCH"):
        return False
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            return False
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        return False
    return True


def new_context(cpu: int | None = None) -> zmq.Context:
    """:returns: a ZeroMQ context whose I/O threads run under ``SCHED_BATCH`` where allowed.

    :param cpu: the CPU its threads run on (default: wherever the process may run).
    :raises ValueError: this process may not run on ``cpu`` (libzmq would abort on it).
    """
    if cpu is not None and cpu not in os.sched_getaffinity(0):
        raise ValueError(f"this process may not run on CPU {cpu}")
    context = zmq.Context()
    # Both options apply when the context starts its threads, at its first socket.
    if batch_policy_allowed():
        context.set(zmq.THREAD_SCHED_POLICY, os.SCHED_BATCH)
    if cpu is not None:
        context.set(zmq.THREAD_AFFINITY_CPU_ADD, int(cpu))
    return context


class Contexts:
    """The ZeroMQ contexts of one process that calls sandboxes.

    :attr:`general` serves everything but calls; :meth:`near` gives, for each
    CPU a sandbox is pinned to, a context whose I/O thread runs on that CPU
    (made on first use). Safe to share between the threads of a process.
    """

    def __init__(self):
        #: the context for sockets not tied to one sandbox's CPU
        self.general = new_context()
        self._near: dict[int, zmq.Context] = {}
        self._lock = threading.Lock()

    def near(self, cpu: int | None) -> zmq.Context:
        """:returns: the context whose I/O thread runs on ``cpu`` (:attr:`general` for ``None``,
            or for a CPU this process may not run on)."""
        if cpu is None:
            return self.general
        with self._lock:
            context = self._near.get(cpu)
            if context is None:
                try:
                    context = new_context(cpu)
                except ValueError:  # the sandbox may run where this process may not
                    context = self.general
                self._near[cpu] = context
            return context

    def destroy(self, linger: int = 0) -> None:
        """Close every socket and terminate every context."""
        with self._lock:
            contexts = {id(c): c for c in [*self._near.values(), self.general]}.values()
            self._near.clear()
        for context in contexts:
            context.destroy(linger=linger)
