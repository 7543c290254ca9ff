"""The decorators module authors use: ``view``, ``query``, ``event_handler``, ``cron``.

A decorator only attaches an :class:`EndpointSpec` to the function (in the
attribute ``__insights_endpoints__``) and returns the function unchanged. Nothing
is registered anywhere: :func:`sandbox.loader.load_module` finds the specs on the
module's functions when it loads the module. ``memoize_query``, which wraps the
function rather than describing it, lives in :mod:`sandbox.memoize`.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from .errors import ModuleLoadError

__all__ = ["EndpointSpec", "view", "query", "event_handler", "cron", "endpoint_specs"]

_ATTRIBUTE = "__insights_endpoints__"
HANDLER_MODES = ("realtime", "queued", "batch")


@dataclass(frozen=True)
class EndpointSpec:
    """What a decorator said about a function.

    :param kind: ``view``, ``query``, ``handler`` or ``cron``.
    :param names: the endpoint's names (the first is its main name; the rest are aliases).
    :param description: human description (defaults to the docstring).
    :param options: kind-specific options (filter, mode, every, backfill, cron...).
    """

    kind: str
    names: tuple[str, ...]
    description: str | None = None
    options: dict = field(default_factory=dict)


def _names(name, func) -> tuple[str, ...]:
    if name is None:
        return (func.__name__,)
    if isinstance(name, str):
        return (name,)
    names = tuple(name)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ModuleLoadError(f"{func.__qualname__}: name must be a string or a non-empty list of strings")
    return names


def _attach(func, spec: EndpointSpec):
    setattr(func, _ATTRIBUTE, getattr(func, _ATTRIBUTE, ()) + (spec,))
    return func


def _seconds(every) -> float | None:
    if every is None:
        return None
    if isinstance(every, datetime.timedelta):
        return every.total_seconds()
    return float(every)


def view(name=None, description=None):
    """Mark a function as a view: it returns HTML (``str``), served at ``/view/{name}``.

    :param name: the view's name (default: the function's name).
    :param description: shown in ``/schema`` and the dashboard (default: the docstring).
    """
    return lambda func: _attach(func, EndpointSpec("view", _names(name, func), description))


def query(name=None, description=None):
    """Mark a function as a query: it returns JSON-able data, served at ``/query/{name}``.

    :param name: the query's name, or a list of names (the first is the main one,
        the others aliases).
    :param description: shown in ``/schema`` (default: the docstring).
    """
    return lambda func: _attach(func, EndpointSpec("query", _names(name, func), description))


def event_handler(filter=None, mode="queued", every=None, backfill=True, name=None, collections=None,
                  per_user=False, per_resource=False, partitions=None):
    """Mark a function as an event handler; it receives ``events`` (a list of ``Event``).

    :param filter: a MongoDB-style query document over the event; only matching
        events are delivered.
    :param mode: ``"realtime"``, ``"queued"`` (default) or ``"batch"``.
    :param every: for ``batch``: a ``timedelta`` or seconds between calls.
    :param backfill: a handler seen for the first time starts at the beginning of
        the log (``True``) or at its head (``False``).
    :param name: the handler's name (default: the function's name).
    :param collections: the collections of the module's ``db`` this handler alone
        writes: ``hostd rebuild MODULE --handler NAME`` drops just those before
        replaying it (without them it refuses; a whole-module rebuild drops the database).
    :param per_user: the handler only needs each user's events in order, not all events:
        hostd may run it as several partitions (each with its own cursor, spread over
        the nodes that run the module), each receiving the events of some users.
    :param per_resource: the same, by resource (course, activity) rather than by user.
    :param partitions: how many partitions (default: hostd's ``cluster.partitions``).
    """
    if collections is not None and (isinstance(collections, str) or not all(
            isinstance(c, str) and c for c in collections)):
        raise ModuleLoadError("event_handler collections must be a list of collection names")
    if mode not in HANDLER_MODES:
        raise ModuleLoadError(f"event_handler mode must be one of {HANDLER_MODES}, not {mode!r}")
    if mode == "batch" and every is None:
        raise ModuleLoadError("event_handler(mode='batch') needs every=")
    if filter is not None and not isinstance(filter, dict):
        raise ModuleLoadError("event_handler filter must be a dict (a MongoDB-style query)")
    _check_partitions(mode, per_user, per_resource, partitions)
    options = {"filter": filter, "mode": mode, "every": _seconds(every), "backfill": bool(backfill),
               "collections": list(collections) if collections is not None else None}
    if per_user or per_resource:  # absent otherwise: the options of existing handlers stay as they were
        options.update(per_user=bool(per_user), per_resource=bool(per_resource), partitions=partitions)
    return lambda func: _attach(func, EndpointSpec("handler", _names(name, func), None, options))


def _check_partitions(mode, per_user, per_resource, partitions) -> None:
    """:raises ModuleLoadError: partition options that cannot work together."""
    if per_user and per_resource:
        raise ModuleLoadError("event_handler takes per_user=True or per_resource=True, not both")
    if partitions is not None:
        if not (per_user or per_resource):
            raise ModuleLoadError("event_handler partitions= needs per_user=True or per_resource=True")
        if isinstance(partitions, bool) or not isinstance(partitions, int) or not 1 <= partitions <= 256:
            raise ModuleLoadError(f"event_handler partitions={partitions!r} must be a whole number from 1 to 256")
    if (per_user or per_resource) and mode == "realtime":
        raise ModuleLoadError("realtime handlers are not partitioned: per_user/per_resource need"
                              " mode='queued' or 'batch'")


def cron(every=None, cron=None, params=None, name=None):
    """Mark a function to be called periodically by hostd in the module's sandbox.

    :param every: a ``timedelta`` or seconds between calls.
    :param cron: a cron expression (``"*/5 * * * *"``) instead of ``every``.
    :param params: request parameters passed to each call.
    :param name: the job's name (default: the function's name).
    """
    if (every is None) == (cron is None):
        raise ModuleLoadError("cron needs exactly one of every= or cron=")
    if cron is not None:
        from croniter import croniter
        if not isinstance(cron, str) or not croniter.is_valid(cron):
            raise ModuleLoadError(f"cron={cron!r} is not a cron expression (minute hour day month weekday)")
    if every is not None and _seconds(every) <= 0:
        raise ModuleLoadError(f"cron every={every!r} must be a positive number of seconds")
    options = {"every": _seconds(every), "cron": cron, "params": dict(params or {})}
    return lambda func: _attach(func, EndpointSpec("cron", _names(name, func), None, options))


def endpoint_specs(obj) -> tuple[EndpointSpec, ...]:
    """:returns: the specs decorators attached to ``obj`` (empty if none)."""
    specs = getattr(obj, _ATTRIBUTE, ())
    return specs if isinstance(specs, tuple) else ()
