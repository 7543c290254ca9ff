"""``GET /metrics``: Prometheus text, the same whichever gunicorn worker answers.

Two kinds of figures:

* what web workers see (requests by route and status, call latency per module,
  events accepted and duplicates) is counted in each worker by
  :class:`WebMetrics`. Under ``hostd serve`` the daemon gives every worker the
  same private folder in ``PROMETHEUS_MULTIPROC_DIR``: prometheus-client keeps
  each worker's values in files there, and a scrape adds up the files of every
  worker, live or gone (:class:`~prometheus_client.multiprocess.MultiProcessCollector`).
  Without the variable (tests in-process, the harness) the figures are the
  process's own.
* what the host knows (module state, restarts and their last reason, handler
  lag, dead letters) is read from the ``/modules`` answer at scrape time by
  :class:`HostCollector`, so it is never stale and never summed twice.

Labels stay bounded: a route is its URI template (``/query/{name}``), never the
raw path; a module is the one the name resolved to; a restart reason is one of
:data:`RESTART_REASONS`.
"""
from __future__ import annotations

import logging
import os
import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["MULTIPROC_ENV", "RESTART_REASONS", "restart_reason", "WebMetrics", "HostCollector",
           "RequestMetrics", "MetricsResource", "prepare_multiproc_dir", "build"]

log = logging.getLogger("insights.metrics")

#: the environment variable prometheus-client reads, in each web worker, before its first metric
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: the values of the ``reason`` label of ``insights_module_last_restart_info``
RESTART_REASONS = ("crashed", "timeout", "memory", "start_timeout", "load_failed", "other")

# (reason, pattern of the supervisor's last_error text), first match wins
_REASON_PATTERNS = (
    ("memory", re.compile(r"memory limit")),
    ("start_timeout", re.compile(r"^not ready after ")),
    ("timeout", re.compile(r"^killed: .*(did not answer|timed out|timeout)", re.IGNORECASE)),
    ("crashed", re.compile(r"^(sandbox process (killed by|exited with)|sandbox exited with"
                           r"|killed: over its CPU limit)")),
)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

_STATES = ("starting", "running", "restarting", "crashloop", "failed", "stopped")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def restart_reason(last_error: str | None, state: str | None = None) -> str:
    """Classify a module's ``last_error`` into one of :data:`RESTART_REASONS`.

    :param last_error: the text ``/modules`` shows.
    :param state: the module's state: a ``failed`` module's error is why it could not load.
    :returns: the reason.
    """
    if state == "failed":
        return "load_failed"
    text = (last_error or "").strip()
    for reason, pattern in _REASON_PATTERNS:
        if pattern.search(text):
            return reason
    return "other"


def prepare_multiproc_dir(path) -> str:
    """Make ``path`` an empty private (0700) folder for the web workers' metric files.

    Called by the daemon before gunicorn starts: files left by a previous run
    would otherwise be added to this one's counters.

    :returns: the folder, as a string for the environment.
    """
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    for entry in os.scandir(path):
        if entry.is_file(follow_symlinks=False) and entry.name.endswith(".db"):
            os.unlink(entry.path)
    return str(path)


class WebMetrics:
    """The counters and histograms one web worker observes.

    :param registry: where to register them (``None`` under multiprocess mode: the
        scrape reads every worker's files instead of any registry).
    """

    def __init__(self, registry: CollectorRegistry | None):
        self.requests = Counter("insights_http_requests", "HTTP requests answered, by route template and status",
                                ["route", "method", "status"], registry=registry)
        self.call_seconds = Histogram("insights_call_duration_seconds",
                                      "Time of view and query calls into a module's sandbox",
                                      ["module", "kind"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.events = Counter("insights_events", "Events posted over HTTP, by outcome in the log"
                              " (accepted: new; duplicate: already logged)", ["outcome"], registry=registry)

    def observe_call(self, module: str, kind: str, seconds: float) -> None:
        """One call into module ``module``'s sandbox took ``seconds`` (``kind``: view or query)."""
        self.call_seconds.labels(module=module, kind=kind).observe(seconds)

    def observe_ingest(self, answer: dict) -> None:
        """Count the ``accepted`` and ``duplicates`` of an ingestion answer."""
        self.events.labels(outcome="accepted").inc(answer.get("accepted") or 0)
        self.events.labels(outcome="duplicate").inc(answer.get("duplicates") or 0)


class HostCollector:
    """Gauges and counters read from the host's ``/modules`` answer at each scrape.

    :param module_status: ``() -> dict``, the ``/modules`` answer
        (:meth:`hostd.web.WebContext.module_status`).
    :param module_records: ``() -> {module: record}``, the module table the web workers
        read: its ``last_exit`` says why a sandbox last died, where ``last_error`` may
        since have become the traceback of a call that raised.
    :param retention_stats: ``() -> dict``, the host's
        :meth:`~hostd.retention.Retention.stats`, or ``None``.
    """

    def __init__(self, module_status, module_records, retention_stats=None):
        self._module_status = module_status
        self._module_records = module_records
        self._retention_stats = retention_stats

    def collect(self):
        """:returns: the metric families (none when the host does not answer: the scrape goes on)."""
        try:
            status = self._module_status()
        except Exception:  # the host is busy or stopping: the web figures still count
            log.warning("/metrics: the host's module status is unavailable", exc_info=True)
            status = None
        up = GaugeMetricFamily("insights_host_up", "1 when the host answered this scrape's module status")
        up.add_metric([], 0 if status is None else 1)
        if status is None:
            return [up]
        return [up, *self._families(status, self._module_records()), *self._retention()]

    def _retention(self):
        """:returns: the retention figures of the host (none when it has none or does not answer)."""
        try:
            stats = self._retention_stats() if self._retention_stats is not None else None
        except Exception:
            log.warning("/metrics: the host's retention figures are unavailable", exc_info=True)
            stats = None
        if not stats:
            return []
        deleted = CounterMetricFamily("insights_retention_deleted", "Log entries and dead letters this hostd"
                                      " deleted as too old since it started", labels=["kind"])
        deleted.add_metric(["events"], stats["events"])
        deleted.add_metric(["dead_letters"], stats["dead_letters"])
        runs = CounterMetricFamily("insights_retention_runs", "Retention passes since hostd started")
        runs.add_metric([], stats["runs"])
        last = GaugeMetricFamily("insights_retention_last_run_timestamp_seconds",
                                 "When the last retention pass ended (0: none yet)")
        last.add_metric([], stats["last_run"])
        held = GaugeMetricFamily("insights_retention_held_back", "1 while a handler's cursor keeps log"
                                 " entries older than events.retention_days", labels=["handler"])
        if stats.get("held_back_by"):
            held.add_metric([stats["held_back_by"]], 1)
        return [deleted, runs, last, held]

    @staticmethod
    def _families(status: dict, records: dict):
        state = GaugeMetricFamily("insights_module_state", "1 for the module's current state",
                                  labels=["module", "state"])
        restarts = CounterMetricFamily("insights_module_restarts", "Restarts of the module's sandbox",
                                       labels=["module"])
        reason = GaugeMetricFamily("insights_module_last_restart_info",
                                   "1, labelled with why the module's sandbox last died or why it failed to"
                                   " load (one of " + ", ".join(RESTART_REASONS) + ")",
                                   labels=["module", "reason"])
        dead = GaugeMetricFamily("insights_module_dead_letters", "Events the module's handlers gave up on",
                                 labels=["module"])
        dead_by_handler = GaugeMetricFamily("insights_handler_dead_letters", "Events a handler gave up on",
                                            labels=["module", "handler"])
        lag = GaugeMetricFamily("insights_handler_lag", "Log positions a handler is behind the head",
                                labels=["module", "handler", "mode"])
        handled = CounterMetricFamily("insights_handler_handled", "Events handled since the host started",
                                      labels=["module", "handler"])
        failures = GaugeMetricFamily("insights_handler_failures", "Consecutive failures of a handler now",
                                     labels=["module", "handler"])
        for module, entry in sorted(status.items()):
            for name in _STATES:
                state.add_metric([module, name], 1 if entry.get("state") == name else 0)
            restarts.add_metric([module], entry.get("restarts") or 0)
            if entry.get("restarts") or entry.get("state") == "failed":
                why = (records.get(module) or {}).get("last_exit") or entry.get("last_error")
                reason.add_metric([module, restart_reason(why, entry.get("state"))], 1)
            dead.add_metric([module], entry.get("dead_letters") or 0)
            for handler, stats in sorted((entry.get("handlers") or {}).items()):
                lag.add_metric([module, handler, str(stats.get("mode"))], stats.get("lag") or 0)
                handled.add_metric([module, handler], stats.get("handled") or 0)
                failures.add_metric([module, handler], stats.get("failures") or 0)
                dead_by_handler.add_metric([module, handler], stats.get("dead_letters") or 0)
        return [state, restarts, reason, dead, dead_by_handler, lag, handled, failures]


class RequestMetrics:
    """Falcon middleware: counts every answered request by route template, method and status,
    and the outcome of each event posted to ``/event``.

    :param metrics: the worker's :class:`WebMetrics`.
    """

    def __init__(self, metrics: WebMetrics):
        self._metrics = metrics

    def process_response(self, req, resp, resource, req_succeeded):
        """Count the request once its status is known (errors included)."""
        route = req.uri_template if resource is not None and req.uri_template else "unrouted"
        method = req.method if req.method in _METHODS else "other"
        self._metrics.requests.labels(route=route, method=method, status=str(resp.status)[:3]).inc()
        if route == "/event":
            media = resp.media if isinstance(resp.media, dict) else {}
            # a realtime 504 carries the ingestion answer in its error: those events are logged too
            answer = media if "accepted" in media else media.get("error") or {}
            if isinstance(answer, dict) and "accepted" in answer:
                self._metrics.observe_ingest(answer)


class MetricsResource:
    """``GET /metrics``: every figure in the Prometheus text format.

    :param registry: what a scrape collects (see :func:`build`).
    """

    def __init__(self, registry: CollectorRegistry):
        self._registry = registry

    def on_get(self, req, resp):
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(self._registry)


def build(module_status, module_records, call_observers=None, retention_stats=None):
    """The metric objects of one app, its middleware and its ``/metrics`` resource.

    In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set) the worker's metrics
    register nowhere: their files are the record, and a scrape adds up every
    worker's. Otherwise they go to a registry of this app alone, so two apps in
    one process never share or clash.

    :param module_status: ``() -> dict``, the ``/modules`` answer.
    :param module_records: ``() -> {module: record}``, the module table.
    :param call_observers: the web context's list of call observers
        (:attr:`hostd.web.WebContext.call_observers`), or ``None`` when it has none.
    :param retention_stats: ``() -> dict``, the host's retention figures, or ``None``.
    :returns: ``(middleware, resource)``.
    """
    multiprocess = bool(os.environ.get(MULTIPROC_ENV))
    registry = CollectorRegistry(auto_describe=False)
    metrics = WebMetrics(None if multiprocess else registry)
    if multiprocess:
        MultiProcessCollector(registry)
    registry.register(HostCollector(module_status, module_records, retention_stats))
    if call_observers is not None:
        call_observers.append(metrics.observe_call)
    return RequestMetrics(metrics), MetricsResource(registry)
