"""``@memoize_query``: results cached in the module's database, each computed by one process at a time.

::

    from sandbox import memoize_query, query

    @query()
    @memoize_query(cache_time=240, timeout=900)
    def heavy(db, course: str):
        ...

The cache key is the function's name and its request parameters, defaults
filled in (and, for a function asking for ``params``, those too); injected
objects are not part of it. Results are stored as msgpack in the module's
cache (:mod:`sandbox.cache`), so every process of the module shares them.

Single flight: a caller that finds no fresh result takes a *lease* on the key
(an atomic conditional upsert) and computes; a caller that finds a live lease
polls the store until the result appears, or until the lease lapses after
``timeout`` seconds, and then takes it over. A computation that raises gives
its lease back at once; when a sandbox dies (killed at a call's deadline, say),
its hostd releases the leases it held, and a lease held by an earlier sandbox of
the same module under the same hostd (which runs one at a time) is taken over at
once too. Within one
sandbox calls are served one at a time, so concurrent callers there simply
find the result the first one stored; while one waits for another process, the
sandbox serves its other calls.

Module code calls ``heavy(course="x")``, ``heavy.force_memoize(course="x")``,
``heavy.from_cache(course="x")`` and ``heavy.clear_cache(course="x")`` with
request parameters only: the sandbox's runtime installs the module's
:class:`Memos` with :func:`use` when it loads the module, and injected objects
come from there. Nothing is set up at import.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import time

from .cache import CacheStore, pack, unpack
from .errors import BadParameter, CacheMiss, ModuleLoadError
from .injection import analyse, bind

__all__ = ["Memos", "MemoizedQuery", "memoize_query", "use"]

_PREFIX = "m|"
_installed: list = []  # the Memos of the module this process runs (set by the runtime)


class Memos:
    """The memoized results of the module this process runs.

    :param store: callable returning the module's :class:`~sandbox.cache.CacheStore`
        (called on first use, so a module that never memoizes never connects for it).
    :param services: callable ``services(name)`` giving the injected object called ``name``.
    :param sleep: how a waiter waits between two reads of the store.
    """

    #: first and longest pause (seconds) between two reads while another process computes
    POLL_S, MAX_POLL_S = 0.02, 0.25

    def __init__(self, store, services, sleep=time.sleep, instance: str = ""):
        self._store_factory = store
        self._store: CacheStore | None = None
        self.services = services
        self._sleep = sleep
        #: which sandbox slot this is: the machine, and the module's place under one hostd
        self._host = _slot(instance)
        self._one_at_a_time = bool(instance)
        #: this process's name on the leases it takes: ``host:pid:token``
        self.owner = f"{owner_prefix(instance, os.getpid())}{os.urandom(4).hex()}"
        self._computing: set = set()

    @property
    def store(self) -> CacheStore:
        """The module's cache store."""
        if self._store is None:
            self._store = self._store_factory()
        return self._store

    def get_or_compute(self, doc_id: str, compute, cache_time: float, lease_s: float):
        """:returns: the fresh result under ``doc_id``, computed by ``compute()`` if there is none
            and no other process is computing it, else waited for."""
        if doc_id in self._computing:
            # This process is computing it lower on the stack: the sandbox served this call while
            # that computation waited on another endpoint. Waiting here would wait for ourselves.
            return self._compute(doc_id, compute, cache_time, leased=False)
        delay = self.POLL_S
        while True:
            entry = self.store.read(doc_id)
            if entry.data is not None:
                return unpack(entry.data)
            taken = None
            if not entry.leased:
                taken = self.store.acquire(doc_id, self.owner, lease_s)
            elif _gone(entry.owner, self._host, self._one_at_a_time):
                taken = self.store.take_over(doc_id, entry.owner, self.owner, lease_s)
            if taken is not None and taken.data is not None:  # stored since our read
                self.store.release(doc_id, self.owner)
                return unpack(taken.data)
            if taken is not None:
                return self._compute(doc_id, compute, cache_time, leased=True)
            self._sleep(delay)
            delay = min(delay * 2, self.MAX_POLL_S)

    def refresh(self, doc_id: str, compute, cache_time: float, lease_s: float):
        """Compute and store, whatever is cached. The lease is taken when free, so callers
        finding no result wait for this computation rather than starting their own.

        :returns: the new result.
        """
        leased = doc_id not in self._computing and self.store.acquire(doc_id, self.owner, lease_s) is not None
        return self._compute(doc_id, compute, cache_time, leased)

    def cached(self, doc_id: str) -> bytes | None:
        """:returns: the packed fresh result under ``doc_id``, or ``None``."""
        return self.store.read(doc_id).data

    def forget(self, doc_id: str) -> None:
        """Delete the result under ``doc_id``."""
        self.store.remove(doc_id)

    def _compute(self, doc_id: str, compute, cache_time: float, leased: bool):
        outermost = doc_id not in self._computing
        self._computing.add(doc_id)
        try:
            data = pack(compute())
            self.store.write(doc_id, data, cache_time)  # ends the lease
        except Exception:
            if leased:  # waiters need not sit out the whole lease
                self.store.release(doc_id, self.owner)
            raise
        finally:
            if outermost:
                self._computing.discard(doc_id)
        return unpack(data)  # what every later caller gets: plain lists for numpy arrays


def _slot(instance: str) -> str:
    return f"{socket.gethostname()}|{instance}" if instance else socket.gethostname()


def owner_prefix(instance: str, pid: int) -> str:
    """:returns: how the leases taken by process ``pid`` of sandbox slot ``instance`` (a
        module's call endpoint under one hostd) begin: hostd releases them when it dies."""
    return f"{_slot(instance)}:{pid}:"


def _gone(owner: str, host: str, one_at_a_time: bool = False) -> bool:
    """:returns: whether the process named ``owner`` (``host:pid:token``) ran in this sandbox
        slot (``host``) and is gone. Elsewhere, or if unsure, it may be alive: its lease must lapse.

    :param one_at_a_time: ``host`` names a slot that holds one process at a time (a module
        under one hostd), so another process there is a dead predecessor. Otherwise ``/proc``
        is asked, which a confined sandbox may not be able to see.
    """
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != host or not parts[1].isdigit() or int(parts[1]) == os.getpid():
        return False
    if one_at_a_time:
        return True
    try:
        with open(f"/proc/{parts[1]}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    except (OSError, IndexError):
        return False
    return state in (b"Z", b"X")  # killed, not yet reaped by its parent


def use(memos: Memos) -> None:
    """Make ``memos`` the one memoized functions use in this process (the runtime calls it)."""
    _installed[:] = [memos]


def _current() -> Memos:
    if not _installed:
        raise RuntimeError("memoized functions run in a module's sandbox: hostd serve, or"
                           " sandbox.testing.ModuleHarness in tests")
    return _installed[0]


class MemoizedQuery:
    """A function wrapped by :func:`memoize_query`; endpoint decorators go on top of it.

    :param func: the module's function.
    :param cache_time: seconds a result stays fresh.
    :param timeout: seconds a computation may hold its lease before others take over.
    """

    def __init__(self, func, cache_time: float, timeout: float):
        functools.update_wrapper(self, func)
        self._func = func
        self._signature = analyse(func, kind="query", where=func.__qualname__)
        self.cache_time = cache_time
        self.timeout = timeout

    def key(self, kwargs: dict) -> str:
        """:returns: the cache document id of a call with keyword arguments ``kwargs``."""
        named = {p.name: kwargs.get(p.name, p.default) for p in self._signature.params}
        extra = kwargs.get("params") if "params" in self._signature.injected else None
        text = json.dumps([self.__qualname__, named, extra], sort_keys=True, separators=(",", ":"),
                          default=repr)
        return _PREFIX + hashlib.sha256(text.encode()).hexdigest()

    def call_bound(self, kwargs: dict, force: bool = False):
        """The runtime's call: ``kwargs`` are converted and hold the injected objects.

        :param force: recompute even when a fresh result is cached.
        :returns: the (possibly cached) result, as msgpack gives it back.
        """
        memos = _current()
        how = memos.refresh if force else memos.get_or_compute
        return how(self.key(kwargs), lambda: self._func(**kwargs), self.cache_time, self.timeout)

    def _bind(self, params: dict, services) -> dict:
        try:
            return bind(self._signature, params, services)
        except BadParameter as err:
            err.nested = True  # module code passed it: a bug of the module, not of its caller
            raise

    def __call__(self, **params):
        """Called from module code: the cached result, or computed once (request parameters only)."""
        return self.call_bound(self._bind(params, _current().services))

    def force_memoize(self, **params):
        """Recompute with these request parameters and store the result, whatever is cached.

        :returns: the new result.
        """
        return self.call_bound(self._bind(params, _current().services), force=True)

    def from_cache(self, **params):
        """:returns: the cached result for these request parameters, never computing it.

        :raises CacheMiss: none is cached (or it expired).
        """
        key = self.key(self._bind(params, lambda name: None))
        data = _current().cached(key)
        if data is None:
            raise CacheMiss(f"{self.__qualname__}: no cached result for {params!r}")
        return unpack(data)

    def clear_cache(self, **params) -> None:
        """Forget the cached result for these request parameters."""
        _current().forget(self.key(self._bind(params, lambda name: None)))


def memoize_query(cache_time: float = 240, timeout: float = 900):
    """Cache a function's results by request parameters; concurrent callers wait for one computation.

    Goes under the endpoint decorator: ``@query()`` (or ``@view()``, ``@cron(...)``)
    then ``@memoize_query(...)`` then ``def ...``. A ``@cron`` job on a memoized
    function recomputes and stores its result each time it runs.

    :param cache_time: seconds a result stays fresh.
    :param timeout: seconds a computation may take before waiting callers give up
        on it and compute it themselves.
    :raises ModuleLoadError: a non-positive time, or a signature no endpoint could have.
    """
    for name, value in (("cache_time", cache_time), ("timeout", timeout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ModuleLoadError(f"memoize_query {name} must be a positive number of seconds, not {value!r}")
    return lambda func: MemoizedQuery(func, cache_time, timeout)
