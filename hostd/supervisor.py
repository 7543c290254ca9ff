"""Supervising one module's sandbox: a state machine driven by one thread.

States and the transitions between them (every one goes through
:meth:`ModuleSupervisor._enter`, which refuses any not in :data:`TRANSITIONS`)::

    stopped    -> starting     start()
    starting   -> running      the sandbox reported ready
    starting   -> failed       the module could not be loaded (it is not restarted)
    starting   -> restarting   the process died, or was not ready in time (SIGKILL at once)
    running    -> restarting   the process died, or a call overran its deadline
    restarting -> crashloop    (instead of restarting) too many quick deaths in a row
    restarting/crashloop -> starting   its backoff delay has passed
    any        -> failed       fail(): e.g. its names collide with another module's
    any        -> stopped      stop()

As in gunicorn's arbiter, other threads never change a supervisor: the broker
*queues* what sandboxes report (:meth:`ModuleSupervisor.signal`), and the
host's monitor thread applies the queue and checks the process in
:meth:`ModuleSupervisor.tick`. So no lock is needed, and none is held while
another part is waited on.
"""
from __future__ import annotations

import enum
import logging
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path

from sandbox import protocol

from .launcher import sandbox_environment

__all__ = ["ModuleState", "TRANSITIONS", "ModuleSupervisor", "RestartPolicy", "Ready", "LoadFailed",
           "Raised", "CallTimedOut", "RebuildState", "stop_all", "sandbox_environment"]

log = logging.getLogger("insights.supervisor")


class ModuleState(str, enum.Enum):
    """The states a module is shown in (``/modules``)."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    CRASHLOOP = "crashloop"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


S = ModuleState
#: Every allowed transition: ``{from: {to, ...}}``.
TRANSITIONS = {
    S.STOPPED: {S.STARTING, S.FAILED},
    S.STARTING: {S.RUNNING, S.RESTARTING, S.CRASHLOOP, S.FAILED, S.STOPPED},
    S.RUNNING: {S.RESTARTING, S.CRASHLOOP, S.FAILED, S.STOPPED},
    S.RESTARTING: {S.STARTING, S.RESTARTING, S.CRASHLOOP, S.FAILED, S.STOPPED},
    S.CRASHLOOP: {S.STARTING, S.CRASHLOOP, S.FAILED, S.STOPPED},
    S.FAILED: {S.STOPPED, S.FAILED},
}


# -- signals: what other threads report, queued to the monitor thread -------------
@dataclass(frozen=True)
class Ready:
    """The sandbox loaded its module."""

    pid: int
    endpoints: list
    manifest: dict = field(default_factory=dict)
    confinement: dict = field(default_factory=dict)
    cpu: int | None = None


@dataclass(frozen=True)
class LoadFailed:
    """The module could not be loaded (the sandbox then exits with ``EXIT_LOAD_FAILED``)."""

    traceback: str


@dataclass(frozen=True)
class Raised:
    """A module function raised; its traceback is kept for ``/modules``."""

    traceback: str


@dataclass(frozen=True)
class CallTimedOut:
    """A call into sandbox ``pid`` overran its deadline: kill it."""

    pid: int
    reason: str


@dataclass(frozen=True)
class RebuildState:
    """The module's data is being rebuilt (``on``), or caught up again."""

    on: bool


@dataclass(frozen=True)
class RestartPolicy:
    """When a dead sandbox is started again."""

    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    crashloop_restarts: int = 5
    stable_after_s: float = 10.0

    @classmethod
    def from_config(cls, config) -> "RestartPolicy":
        """:returns: the policy of a :class:`~hostd.config.Config`."""
        return cls(config["supervisor.backoff_initial_s"], config["supervisor.backoff_max_s"],
                   config["supervisor.crashloop_restarts"], config["supervisor.stable_after_s"])

    def delay(self, quick_deaths: int) -> float:
        """:returns: the wait before the next start after ``quick_deaths`` deaths in a row."""
        return min(self.backoff_initial_s * 2 ** (quick_deaths - 1), self.backoff_max_s)


class ModuleSupervisor:
    """Starts, watches and restarts the sandbox of one module.

    :param name: the module's name.
    :param path: its folder.
    :param limits: its effective ``limits.*`` settings.
    :param launcher: the host's :class:`~hostd.launcher.Launcher`.
    :param fs_key: the module's key for signing file URLs.
    :param policy: the :class:`RestartPolicy`.
    :param on_change: called (without arguments) after every state change.
    :param admit: ``admit(module, endpoints) -> error | None``, asked when the sandbox is
        ready: an error (e.g. a name another module serves) fails the module.
    """

    def __init__(self, name: str, path, limits: dict, launcher, fs_key: bytes,
                 policy: RestartPolicy = RestartPolicy(), on_change=lambda: None, admit=None):
        self.name = name
        self.path = Path(path)
        self.limits = limits
        self._launcher = launcher
        self._fs_key = fs_key
        self._policy = policy
        self._on_change = on_change
        self._admit = admit
        self._signals: queue.SimpleQueue = queue.SimpleQueue()
        self.key = protocol.new_key()
        #: the module's end of its upcall channel in hostd (remembers nonces: replays are refused)
        self.signer = protocol.Signer(self.key)
        self.state = ModuleState.STOPPED
        self.sandbox = None
        self.restarts = 0
        self.last_error: str | None = None
        #: why the sandbox last died (``last_error`` moves on when a call raises; ``/metrics`` reads this)
        self.last_exit: str | None = None
        self.endpoints: list = []
        self.manifest: dict = {}
        self.confinement: dict = {}
        #: the one CPU the running sandbox is pinned to (None: not pinned); callers' sockets follow it
        self.cpu: int | None = None
        #: its data is being rebuilt: its views and queries answer 503 meanwhile
        self.rebuilding = False
        self.started_at: float | None = None
        self.ready_at: float | None = None
        self._quick_deaths = 0
        self._next_start = 0.0
        self._load_failed = False       # the sandbox reported load_failed (then exits with 3)
        self._kill_reason = None        # why hostd killed it, reported instead of the signal

    # -- what others see -----------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The sandbox's pid while it runs."""
        return self.sandbox.pid if self.sandbox is not None else None

    def record(self) -> dict:
        """:returns: this module's entry of the module table."""
        return {"name": self.name, "path": str(self.path), "state": self.state.value, "pid": self.pid,
                "restarts": self.restarts, "last_error": self.last_error, "last_exit": self.last_exit,
                "started_at": self.started_at, "call_endpoint": self._launcher.call_endpoint(self.name),
                "key": self.key.hex(), "endpoints": self.endpoints, "manifest": self.manifest,
                "limits": self.limits, "confinement": self.confinement, "cpu": self.cpu,
                "rebuilding": self.rebuilding}

    def signal(self, report) -> None:
        """Queue a report (:class:`Ready`, :class:`LoadFailed`, :class:`Raised`,
        :class:`CallTimedOut`) for the next :meth:`tick`; callable from any thread."""
        self._signals.put(report)
        self._on_change()

    # -- the one place states change -----------------------------------------
    def _enter(self, state: ModuleState) -> None:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"module {self.name}: no transition {self.state} -> {state}")
        if state != self.state:
            log.info("module %s: %s -> %s", self.name, self.state, state)
            self.state = state
        self._on_change()

    # -- driven by the monitor thread ----------------------------------------
    def start(self) -> None:
        """Launch the sandbox: stopped/restarting/crashloop -> starting."""
        if self.sandbox is not None and self.sandbox.poll() is None:
            return
        try:
            self.sandbox = self._launcher.launch(self.name, self.path, self.limits, self.key, self._fs_key)
        except Exception as err:  # e.g. the store relay or the upcall socket could not be set up
            log.exception("module %s: cannot prepare its sandbox", self.name)
            self.last_error = f"cannot prepare the sandbox: {err}"
            self._enter(ModuleState.STARTING)
            self._died(time.time())
            return
        self.started_at, self.ready_at, self._load_failed = time.time(), None, False
        self._enter(ModuleState.STARTING)

    def tick(self, now: float | None = None) -> None:
        """Apply queued signals, then notice deaths, start timeouts and due restarts."""
        while True:
            try:
                self._apply(self._signals.get_nowait())
            except queue.Empty:
                break
        now = time.time() if now is None else now
        if self.state in (S.STOPPED, S.FAILED):
            return
        if self.state in (S.RESTARTING, S.CRASHLOOP):
            if now >= self._next_start:
                self.start()
            return
        status = self.sandbox.poll()
        if status is None:
            if self.state is S.STARTING and now - self.started_at > self.limits["start_timeout_s"]:
                # never ready: it has nothing to lose, so no grace period
                self.last_error = f"not ready after {self.limits['start_timeout_s']:g} s"
                self.sandbox.kill()
                self._died(time.time())
            return
        if status == protocol.EXIT_LOAD_FAILED and self._load_failed:
            self._discard_sandbox()
            self._launcher.forget(self.name)  # its CPU goes to modules that run
            self._enter(ModuleState.FAILED)
            return
        log.warning("module %s: sandbox exited with status %s", self.name, status)
        if self._kill_reason is not None:
            self.last_error, self._kill_reason = self._kill_reason, None
        elif self.last_error is None or self.state is S.RUNNING:
            self.last_error = self.sandbox.death_reason(status)
        self._died(now)

    def fail(self, reason: str) -> None:
        """Kill the sandbox and mark the module failed (it is not restarted)."""
        self.last_error = reason
        if self.sandbox is not None:
            self.sandbox.kill()
            self._discard_sandbox()
        self._launcher.forget(self.name)  # its CPU goes to modules that run
        self._enter(ModuleState.FAILED)

    def _apply(self, report) -> None:
        if isinstance(report, Ready):
            if self.state is not S.STARTING or self.pid != report.pid:
                return  # stale: from a sandbox already gone
            error = self._admit(self.name, report.endpoints) if self._admit else None
            if error:
                self.fail(error)
                return
            self.endpoints, self.manifest = report.endpoints, report.manifest
            self.confinement = dict(report.confinement or {})
            missing = {layer: text for layer, text in self.confinement.items()
                       if isinstance(text, str) and text.startswith("unavailable")}
            if missing:
                log.warning("module %s runs without %s", self.name,
                            "; ".join(f"{layer} ({text})" for layer, text in missing.items()))
            cpu = report.cpu
            self.cpu = cpu if isinstance(cpu, int) and not isinstance(cpu, bool) else None
            self.ready_at = time.time()
            self._enter(ModuleState.RUNNING)
        elif isinstance(report, LoadFailed):
            self.last_error, self._load_failed = report.traceback, True
        elif isinstance(report, Raised):
            self.last_error = report.traceback
            self._on_change()
        elif isinstance(report, RebuildState):
            self.rebuilding = report.on
            self._on_change()
        elif isinstance(report, CallTimedOut):
            if self.state is S.RUNNING and self.pid == report.pid:
                self._kill_reason = f"killed: {report.reason}"
                self.sandbox.kill()  # tick() sees the death and restarts it

    def _died(self, now: float) -> None:
        uptime = now - (self.ready_at or now)
        if self.ready_at is not None and uptime >= self._policy.stable_after_s:
            self._quick_deaths = 0
        self._quick_deaths += 1
        self.restarts += 1
        self.last_exit = self.last_error
        self._next_start = now + self._policy.delay(self._quick_deaths)
        self._discard_sandbox()
        crashloop = self._quick_deaths >= self._policy.crashloop_restarts
        self._enter(ModuleState.CRASHLOOP if crashloop else ModuleState.RESTARTING)

    def _discard_sandbox(self) -> None:
        if self.sandbox is not None:
            self.sandbox.cleanup()
            self.sandbox = None

    # -- stopping, possibly many at once ---------------------------------------
    def begin_stop(self) -> None:
        """First half of a stop: SIGTERM a running sandbox; SIGKILL one that never got ready."""
        if self.sandbox is None:
            return
        if self.state is S.RUNNING:
            self.sandbox.terminate()
        else:
            self.sandbox.kill()

    def finish_stop(self, deadline: float) -> None:
        """Second half: wait for the exit until ``deadline``, then SIGKILL; -> stopped."""
        if self.sandbox is not None:
            while self.sandbox.poll() is None and time.time() < deadline:
                time.sleep(0.02)
            self.sandbox.kill()
            self._discard_sandbox()
        self._launcher.release(self.name)
        self._enter(ModuleState.STOPPED)

    def stop(self, grace_s: float = 3.0) -> None:
        """Stop the sandbox (SIGTERM, then SIGKILL after ``grace_s``) and mark the module stopped."""
        stop_all([self], grace_s)


def stop_all(supervisors, grace_s: float = 3.0) -> None:
    """Stop many sandboxes at once: all are signalled, then all are waited for together.

    :param grace_s: how long running sandboxes get to finish before SIGKILL.
    """
    supervisors = list(supervisors)
    for supervisor in supervisors:
        supervisor.begin_stop()
    deadline = time.time() + grace_s
    for supervisor in supervisors:
        supervisor.finish_stop(deadline)
