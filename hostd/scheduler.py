"""Cron: running modules' ``@cron`` tasks on schedule, in their sandboxes, one run at a time.

The :class:`CronScheduler` thread takes the ``cron`` endpoints of the running
modules from each published module table. A task's schedule is either
``every`` seconds or a cron expression (``"*/5 * * * *"``, read with croniter in
the host's local time). When a task is due, a worker thread takes the task's
lease in the store (:class:`CronLeases`), calls the task in the module's
sandbox, and gives the lease back with the outcome. The lease is what makes a
run unique: a run still going when the next one is due is skipped and counted,
also when the run belongs to an earlier hostd process (its lease lasts the
task's timeout) or, later, to another node sharing the store.
"""
from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pymongo.errors
from croniter import croniter

from sandbox.errors import AlreadyRunning, EndpointNotFound, InsightsError, ModuleNotRunning

from .calls import SandboxClient

__all__ = ["CronScheduler", "CronLeases", "CronTask"]

log = logging.getLogger("insights.cron")
_WORKERS = 64  # runs wait on their sandboxes; one module's runs share one connection


class CronLeases:
    """Per-task leases and counters, in hostd's state database (``cron`` collection).

    One document per task, ``_id`` ``"cron|<module>|<task>"``: ``holder`` and
    ``until`` (the lease), ``runs``, ``skips``, ``last_start``, ``last_end``,
    ``last_error``.

    :param db: hostd's state database.
    """

    def __init__(self, db):
        self._coll = db["cron"]

    @staticmethod
    def _key(module: str, task: str) -> str:
        return f"cron|{module}|{task}"

    def acquire(self, module: str, task: str, holder: str, lease_s: float, now: float) -> bool:
        """Take the task's lease unless someone holds an unexpired one. :returns: whether taken."""
        # update_one, not find_one_and_update: the embedded store's find_one_and_update
        # silently does nothing when its upsert meets the existing document.
        try:
            self._coll.update_one(
                {"_id": self._key(module, task), "until": {"$lt": now}},
                {"$set": {"holder": holder, "until": now + lease_s, "last_start": now, "module": module,
                          "task": task}},
                upsert=True)
            return True
        except pymongo.errors.DuplicateKeyError:  # the document exists and its lease is held
            return False

    def release(self, module: str, task: str, holder: str, error: str | None, now: float) -> None:
        """Give the lease back, counting the run and keeping its outcome."""
        self._coll.update_one({"_id": self._key(module, task), "holder": holder},
                              {"$set": {"until": 0.0, "last_end": now, "last_error": error},
                               "$inc": {"runs": 1}})

    def skipped(self, module: str, task: str) -> None:
        """Count a run skipped because the previous one was still going."""
        self._coll.update_one({"_id": self._key(module, task)}, {"$inc": {"skips": 1}})

    def state(self, module: str, task: str) -> dict:
        """:returns: the task's document (empty if it never ran)."""
        return self._coll.find_one({"_id": self._key(module, task)}) or {}


class CronTask:
    """One scheduled task of a running module.

    :param module: the module's name.
    :param name: the task's name.
    :param options: the ``@cron`` options (``every`` or ``cron``, ``params``).
    """

    def __init__(self, module: str, name: str, options: dict):
        self.module, self.name = module, name
        self.options = dict(options)
        self.every = options.get("every")
        self.expression = options.get("cron")
        self.params = dict(options.get("params") or {})
        self.next_run = 0.0
        self.running: Future | None = None
        self.stats = {"runs": 0, "skips": 0, "last_start": None, "last_end": None, "last_error": None,
                      "last_delay": None}

    @property
    def schedule(self) -> str:
        """The schedule as a person reads it."""
        return f"every {self.every:g} s" if self.every else f"cron {self.expression}"

    def next_after(self, moment: float) -> float:
        """:returns: when the task is due next, after ``moment`` (epoch seconds)."""
        if self.every:
            return moment + self.every
        start = datetime.datetime.fromtimestamp(moment).astimezone()
        return croniter(self.expression, start).get_next(float)

    def advance(self, now: float) -> float:
        """Move to the next due time after the one that came: an ``every`` task keeps its grid
        (a slow loop does not make it drift), skipping the slots already past.

        :returns: the due time that came.
        """
        due = self.next_run
        following = self.next_after(due)
        self.next_run = following if following > now else self.next_after(now)
        return due

    def describe(self) -> dict:
        """:returns: the task's ``/modules`` detail."""
        return {"schedule": self.schedule, "next_run": self.next_run,
                "running": self.running is not None and not self.running.done(), **self.stats}


class CronScheduler(threading.Thread):
    """Runs the cron tasks of the running modules.

    :param leases: the :class:`CronLeases`.
    :param record_of: ``record_of(module) -> record | None``: a module's current table record.
    :param contexts: the host's :class:`~sandbox.transport.Contexts`.
    :param on_timeout: ``on_timeout(module, pid, reason)``: a run overran its deadline.
    :param may_run: ``may_run(module, task) -> bool``: whether this node schedules the task now
        (it holds the task's lease among the nodes sharing the store); None: always.
    """

    def __init__(self, leases: CronLeases, record_of, contexts, on_timeout=None, may_run=None):
        super().__init__(name="insights-cron", daemon=True)
        self._leases = leases
        self._record_of = record_of
        self._contexts = contexts
        self._on_timeout = on_timeout
        self._may_run = may_run
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._tasks: dict = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="insights-cron-run")
        self._clients: dict = {}   # module -> (lock, SandboxClient): one connection per module

    # -- what the host tells it ------------------------------------------------
    def update(self, records: dict) -> None:
        """Take the cron tasks of the running modules among ``records`` (module table records)."""
        with self._lock:
            tasks = {}
            for record in records.values():
                if record.get("state") != "running":
                    continue
                for endpoint in record.get("endpoints") or []:
                    if endpoint["class"] != "cron":
                        continue
                    key = (record["name"], endpoint["name"])
                    task = self._tasks.get(key)
                    if task is None or task.options != (endpoint.get("options") or {}):
                        task = self._new_task(record["name"], endpoint["name"], endpoint.get("options") or {})
                    tasks[key] = task
            self._tasks = tasks
        self._wake.set()

    def _new_task(self, module: str, name: str, options: dict) -> CronTask:
        task = CronTask(module, name, options)
        known = self._leases.state(module, name)
        for field in task.stats:
            task.stats[field] = known.get(field, task.stats[field])
        now = time.time()
        # an every= task keeps its rhythm across restarts; a new one first runs one period from now
        last = known.get("last_start")
        task.next_run = max(now, task.next_after(last)) if task.every and last else task.next_after(now)
        return task

    def stats(self, module: str) -> dict:
        """:returns: ``{task: detail}`` of a module's tasks, for ``/modules``."""
        with self._lock:
            return {name: task.describe() for (m, name), task in self._tasks.items() if m == module}

    def stop(self) -> None:
        """End the loop; runs in progress finish in their sandboxes."""
        self._stopping.set()
        self._wake.set()

    # -- running -----------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                now = time.time()
                with self._lock:
                    tasks = list(self._tasks.values())
                for task in tasks:
                    if now >= task.next_run:
                        due = task.advance(now)
                        if self._may_run is None or self._may_run(task.module, task.name):
                            self._start(task, due)
                soonest = min((t.next_run for t in tasks), default=now + 1.0)
                self._wake.wait(max(0.0, min(1.0, soonest - time.time())))
                self._wake.clear()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            for _, client in self._clients.values():
                client.close()

    def _start(self, task: CronTask, due: float) -> None:
        if task.running is not None and not task.running.done():
            self._skip(task)
            return
        task.running = self._pool.submit(self._run, task, False, due)

    def _skip(self, task: CronTask) -> None:
        task.stats["skips"] += 1
        log.info("cron %s.%s: skipped, the previous run is still going", task.module, task.name)
        try:
            self._leases.skipped(task.module, task.name)
        except pymongo.errors.PyMongoError:
            log.warning("cron %s.%s: the skip could not be counted in the store", task.module, task.name)

    def run_now(self, module: str, name: str):
        """Run a task at once and wait for it (``hostd cron run``, the harness).

        :returns: what the task returned.
        :raises EndpointNotFound: no such task; :raises AlreadyRunning: a run is going;
            :raises InsightsError: the run failed.
        """
        with self._lock:
            task = self._tasks.get((module, name))
        if task is None:  # a table not yet published: the module's live record knows its tasks
            record = self._record_of(module) or {}
            found = [e for e in record.get("endpoints") or [] if e["class"] == "cron" and e["name"] == name]
            if not found or record.get("state") != "running":
                raise EndpointNotFound(f"module {module!r} has no running cron task {name!r}")
            task = self._new_task(module, name, found[0].get("options") or {})
        return self._run(task, True)

    def _call(self, module: str, record: dict, name: str, params: dict, timeout_s: float):
        """Call a task in its sandbox over the module's one connection (one run at a time on it:
        the sandbox serves one call at a time anyway)."""
        with self._lock:
            entry = self._clients.get(module)
            if entry is None:
                entry = self._clients[module] = (threading.Lock(), SandboxClient(self._contexts, self._record_of))
        with entry[0]:
            return entry[1].call(record, "cron", name, params, timeout_s)

    def _run(self, task: CronTask, raise_errors: bool, due: float | None = None):
        record = self._record_of(task.module)
        if record is None or record.get("state") != "running":
            if raise_errors:
                raise ModuleNotRunning(f"module {task.module!r} is not running")
            return None
        timeout_s = record["limits"]["call_timeout_s"]
        started = time.time()
        if not self._leases.acquire(task.module, task.name, self._holder, timeout_s + 5.0, started):
            self._skip(task)
            if raise_errors:
                raise AlreadyRunning(f"cron task {task.module}.{task.name} is already running")
            return None
        task.stats["last_start"], error, result = started, None, None
        if due is not None:  # how late the run started after it was due
            task.stats["last_delay"] = started - due
        try:
            result = self._call(task.module, record, task.name, task.params, timeout_s)
        except InsightsError as err:
            error = f"{type(err).__name__}: {err}"
            if err.code == "timeout" and self._on_timeout is not None:
                self._on_timeout(task.module, record.get("pid"), f"cron task {task.name} timed out")
            if raise_errors:
                raise
        finally:
            ended = time.time()
            task.stats.update(last_end=ended, last_error=error, runs=task.stats["runs"] + 1)
            try:
                self._leases.release(task.module, task.name, self._holder, error, ended)
            except pymongo.errors.PyMongoError:
                log.exception("cron %s.%s: the lease could not be given back", task.module, task.name)
        return result
