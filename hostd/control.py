"""What web workers ask the host over the control socket, answered by the host's parts.

:class:`ControlService` builds the broker's table of control verbs
(:class:`~hostd.broker.ControlVerb`): the ``/modules`` status (from memory, on
the broker's thread), stored events and dead letters (store reads, off it),
and reports of calls that overran their deadline.
"""
from __future__ import annotations

import time

from sandbox.errors import EndpointNotFound

from .broker import ControlVerb
from .supervisor import CallTimedOut

__all__ = ["ControlService"]


class ControlService:
    """The host's answers to control requests.

    :param modules: the host's :class:`~hostd.modules.ModuleSet`.
    :param deliveries: the host's :class:`~hostd.delivery.Delivery` threads.
    :param eventlog: the :class:`~hostd.eventlog.EventLog`.
    :param dead_letters: the :class:`~hostd.deadletters.DeadLetters`.
    :param scheduler: the :class:`~hostd.scheduler.CronScheduler`.
    :param rebuilds: the :class:`~hostd.rebuild.Rebuilds`.
    :param cluster: the node's :class:`~hostd.cluster.Cluster` (its id, who holds which lease).
    """

    def __init__(self, modules, deliveries, eventlog, dead_letters, scheduler, rebuilds, cluster=None):
        self._modules = modules
        self._deliveries = tuple(deliveries)
        self._log = eventlog
        self._dead_letters = dead_letters
        self._scheduler = scheduler
        self._rebuilds = rebuilds
        self._cluster = cluster

    def verbs(self) -> dict:
        """:returns: ``{verb: ControlVerb}`` for the broker."""
        return {
            "status": ControlVerb(lambda message: self.module_status()),
            "timeout_report": ControlVerb(self._timeout_report, notification=True),
            "stored_events": ControlVerb(self._stored_events, blocking=True),
            "dead_letters": ControlVerb(
                lambda message: self._dead_letters.list(self._known(message.get("module"))), blocking=True),
            "dead_letters_retry": ControlVerb(self._retry, blocking=True),
            "cron_run": ControlVerb(self._cron_run, blocking=True),
            "rebuild": ControlVerb(
                lambda message: self._rebuilds.start(str(message.get("module")), message.get("handler")),
                blocking=True),
        }

    def module_status(self) -> dict:
        """:returns: the ``/modules`` answer, from memory: states, pids, errors and handler detail;
            in a cluster, this node's id and the node holding each handler's and task's lease."""
        head = max(thread.head for thread in self._deliveries)
        out = {}
        for name in self._modules.names():
            record = self._modules.record(name)
            if record is None:
                continue
            letters = self._dead_letters.by_handler(name)
            handlers = {s.name: {**s.stats(head), "dead_letters": letters.get(s.name, 0)}
                        for thread in self._deliveries for s in thread.states(name)}
            crons = self._scheduler.stats(name)
            if self._cluster is not None:
                for handler, detail in handlers.items():
                    detail["lease"] = self._cluster.holder(name, handler)
                for task, detail in crons.items():
                    detail["lease"] = self._cluster.cron_holder(name, task)
            out[name] = {key: record[key] for key in ("state", "pid", "restarts", "last_error", "confinement",
                                                      "rebuilding")}
            out[name].update(lag=sum(h["lag"] for h in handlers.values()),
                             handled=sum(h["handled"] for h in handlers.values()),
                             dead_letters=self._dead_letters.count(name), handlers=handlers,
                             crons=crons, path=record["path"])
            if self._cluster is not None:
                out[name]["node"] = self._cluster.node
        return out

    def _known(self, module) -> str:
        if not isinstance(module, str) or self._modules.get(module) is None:
            raise EndpointNotFound(f"no module named {module!r}")
        return module

    def _timeout_report(self, message) -> None:
        supervisor = self._modules.get(message.get("module", ""))
        if supervisor is not None:
            supervisor.signal(CallTimedOut(message.get("pid"), message.get("reason") or "a call timed out"))

    def _stored_events(self, message) -> dict:
        return self._log.events_by_id([str(i) for i in (message.get("ids") or [])][:1000])

    def _cron_run(self, message) -> dict:
        started = time.time()
        result = self._scheduler.run_now(self._known(message.get("module")), str(message.get("task")))
        return {"result": result, "seconds": round(time.time() - started, 3)}

    def _retry(self, message) -> dict:
        count = self._dead_letters.request_retry(self._known(message.get("module")))
        for thread in self._deliveries:
            thread.notify(0)
        return {"retrying": count}
