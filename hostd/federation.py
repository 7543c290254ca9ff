"""Federation: a node answers the views and queries its peers host, as if they were its own.

A node configured with ``[[peers]]`` (:mod:`hostd.peers`) keeps, for each peer,
the views and queries the peer hosts itself, read from the peer's ``/schema``
and reused for the peer's ``schema_cache_s``. A name this node does not serve
is forwarded to the peer that serves it, with the peer's token (never the
caller's), and the peer's answer or error comes back as it was. Web workers
use it for ``/view``, ``/query``, ``/schema``, ``/openapi.json`` and the
dashboard; the host's broker uses it for ``query.NAME()`` calls made inside
sandboxes.

Which node answers a name:

* this node, whenever one of its modules has the name (whatever that module's
  state: a module that is down here answers 503 here, it is not hidden by a peer);
* else the first peer, in configuration order, that is up and lists the name;
* else the first that listed it when last seen: it answers 503
  (``peer_unavailable``) if it is still down.

Every request a node sends a peer carries :data:`FORWARDED_HEADER`; a node
answers such a request from its own modules only, so two nodes that list each
other never send a request back and forth, and one peer being down never
slows the ``/schema`` of another.

A peer's schema is refreshed in the background once it is older than its
``schema_cache_s`` (the stale one is used meanwhile); only the very first
look at a peer waits for it, at most its ``timeout_s``.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from urllib.parse import quote

import requests

from sandbox.endpoints import query_string
from sandbox.errors import EndpointNotFound, InsightsError, ModuleTimeout

from .peers import Peer, peers_of

__all__ = ["FORWARDED_HEADER", "LOCAL", "Federation", "PeerUnavailable", "RelayedError", "request_peers"]

log = logging.getLogger("insights.federation")

#: Marks a request sent by another node: answered from this node's own modules only.
FORWARDED_HEADER = "X-Insights-Forwarded"
#: The ``node`` of this node's own ``/schema`` entries.
LOCAL = "local"
_NEVER = float("-inf")


class PeerUnavailable(InsightsError):
    """The peer serving a name cannot be reached, or refused this node's token (503).

    :param connect_failed: the request never reached the peer (another peer may be tried).
    """

    code = "peer_unavailable"

    def __init__(self, message: str, node: str, connect_failed: bool = False):
        super().__init__(message)
        self.node = node
        self.connect_failed = connect_failed

    def to_reply_fields(self) -> dict:
        return {**super().to_reply_fields(), "node": self.node}


class PeerTimeout(ModuleTimeout):
    """The peer accepted the call but did not answer in time (504)."""

    def __init__(self, message: str, node: str):
        super().__init__(message)
        self.node = node

    def to_reply_fields(self) -> dict:
        return {**super().to_reply_fields(), "node": self.node}


class RelayedError(InsightsError):
    """An error a peer answered, passed on as it came (its code, message and other fields).

    :param fields: the peer's ``error`` object.
    :param node: the peer's URL (added to the fields as ``node``).
    """

    def __init__(self, fields: dict, node: str):
        super().__init__(str(fields.get("message", "")))
        self.code = str(fields.get("code") or "internal")
        self._fields = {**fields, "code": self.code, "message": str(self), "node": node}

    def to_reply_fields(self) -> dict:
        return dict(self._fields)


def request_peers(web, req):
    """:returns: the :class:`Federation` to consult for request ``req`` of ``web``, or ``None``:
        no peers, or a request another node forwarded (answered from this node's modules only)."""
    if req.get_header(FORWARDED_HEADER):
        return None
    return getattr(web, "peers", None)


class _PeerState:
    """What this process knows of one peer. Changed only under :attr:`Federation._lock`."""

    def __init__(self, peer: Peer):
        self.peer = peer
        self.entries: list | None = None   # its own views and queries when last read; None: never read
        self.error: str | None = None      # why it was unreachable last time; None: it answered
        self.fetched_at = _NEVER           # time.monotonic() of the last attempt
        self.refreshing = None             # the Future of a refresh under way


class Federation:
    """The peers of one node, as seen from one process (a web worker, or the host).

    :param peers: the peers, in configuration order.
    :param call_timeout_s: how long to wait for a forwarded call's answer once the peer
        accepted it (the peer's own modules answer 504 at their ``call_timeout_s``).
    """

    def __init__(self, peers: list[Peer], call_timeout_s: float):
        self.peers = list(peers)
        self._call_timeout_s = call_timeout_s
        self._lock = threading.Lock()
        self._pid = None
        self._session = self._pool = None
        self._states: list[_PeerState] = []
        self._warned: set = set()

    @classmethod
    def from_config(cls, config) -> "Federation | None":
        """:returns: the federation of ``config``'s ``peers``, or ``None`` when it has none."""
        peers = peers_of(config["peers"])
        if not peers:
            return None
        return cls(peers, config["limits.call_timeout_s"])

    def _in_process(self) -> None:
        """Connections, threads and knowledge belong to one process: start afresh after a fork.

        Called with :attr:`_lock` held.
        """
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._session = requests.Session()
            self._pool = ThreadPoolExecutor(len(self.peers), thread_name_prefix="insights-peers")
            self._states = [_PeerState(peer) for peer in self.peers]

    def close(self) -> None:
        """Close this process's connections to the peers and stop its refresh threads."""
        with self._lock:
            session, pool = self._session, self._pool
            self._pid = self._session = self._pool = None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if session is not None:
            session.close()

    # -- what the peers serve ------------------------------------------------------
    def _current(self) -> list[tuple[Peer, list | None, str | None]]:
        """:returns: ``(peer, entries, error)`` of every peer, in configuration order.

        Starts a refresh of each peer's schema that is older than its cache time, and
        waits only for peers never read yet (at most twice their ``timeout_s``).
        """
        first = []
        with self._lock:
            self._in_process()
            now = time.monotonic()
            for state in self._states:
                if state.refreshing is None and now - state.fetched_at >= state.peer.schema_cache_s:
                    state.refreshing = self._pool.submit(self._refresh, state)
                if state.fetched_at == _NEVER:
                    first.append(state.refreshing)
        if first:  # a schema read may wait for the connection, then as long again for the answer
            wait_for(first, timeout=2 * max(s.timeout_s for s in self.peers) + 1.0)
        with self._lock:
            return [(s.peer, s.entries, s.error) for s in self._states]

    def _refresh(self, state: _PeerState) -> None:
        peer = state.peer
        try:
            entries = self._read_schema(peer)
        except InsightsError as err:
            error, entries = str(err), None
        except Exception as err:  # a refresh never dies silently in the pool
            log.exception("reading the schema of peer %s failed", peer.url)
            error, entries = f"reading its schema failed ({type(err).__name__})", None
        else:
            error = None
        with self._lock:
            self._set_error(state, error)
            if entries is not None:
                state.entries = entries
            state.fetched_at = time.monotonic()
            state.refreshing = None

    def _read_schema(self, peer: Peer) -> list[dict]:
        """:returns: the views and queries ``peer`` hosts itself (its own ``/schema`` entries)."""
        response = self._request(peer, "GET", "/schema", "GET /schema", (peer.timeout_s, peer.timeout_s))
        try:
            entries = response.json()
        except ValueError:
            entries = None
        if not isinstance(entries, list):
            raise PeerUnavailable(f"peer {peer.url} answered /schema with something else than a list",
                                  peer.url)
        return [e for e in entries if isinstance(e, dict) and e.get("class") in ("view", "query")
                and isinstance(e.get("name"), str) and isinstance(e.get("params"), list)
                and e.get("node", LOCAL) == LOCAL]

    def _ordered(self) -> list[tuple[Peer, list, str | None]]:
        """The peers that were ever read, those up first, each group in configuration order."""
        known = [(peer, entries, error) for peer, entries, error in self._current() if entries is not None]
        return sorted(known, key=lambda item: item[2] is not None)

    def entries(self) -> list[dict]:
        """:returns: the peers' views and queries, one entry per name: the ``/schema`` entry of
            the peer that answers it, with ``node`` (its URL) and, when it is down,
            ``unavailable`` (why)."""
        taken, out = {}, []
        for peer, entries, error in self._ordered():
            for entry in entries:
                key = (entry["class"], entry["name"])
                if key in taken:
                    self._warn_collision(key, taken[key], (peer.url, entry.get("module")))
                    continue
                taken[key] = (peer.url, entry.get("module"))
                out.append({**entry, "node": peer.url, **({"unavailable": error} if error else {})})
        return out

    def _warn_collision(self, key, first, second) -> None:
        """Two peers serve one name from modules of different names: say so, once."""
        if first[1] != second[1] and (key, first, second) not in self._warned:
            self._warned.add((key, first, second))
            log.warning("%s %r is served by module %s at %s and by module %s at %s: of the two, this node"
                        " asks %s", key[0], key[1], first[1], first[0], second[1], second[0], first[0])

    def find(self, kind: str, name: str) -> dict | None:
        """:returns: the ``/schema`` entry (with ``node``) of the peer that answers ``kind``
            ``name``, or ``None`` if no peer lists it."""
        return next((e for e in self.entries() if e["class"] == kind and e["name"] == name), None)

    def unreachable(self) -> list[str]:
        """:returns: the URLs of the peers that did not answer the last time they were asked."""
        return [peer.url for peer, _entries, error in self._current() if error is not None]

    # -- calls -------------------------------------------------------------------------
    def call(self, kind: str, name: str, params: dict, timeout_s: float | None = None):
        """Call a view or query a peer hosts.

        Tries the peers that list the name in the order of :meth:`entries`; the next one is
        tried only when a peer could not be reached at all.

        :param params: the call's parameters (already forced by the caller's policy).
        :param timeout_s: how long to wait for the answer (default: this node's
            ``limits.call_timeout_s`` plus the peer's ``timeout_s``).
        :returns: the view's HTML or the query's JSON result.
        :raises EndpointNotFound: no peer lists the name.
        :raises PeerUnavailable: the peers that list it cannot be reached, or refused the token.
        :raises PeerTimeout: the peer did not answer in time.
        :raises RelayedError: the peer's own error (400, 404, 500, 502, 503, 504...).
        """
        candidates = [peer for peer, entries, _error in self._ordered()
                      if any(e["class"] == kind and e["name"] == name for e in entries)]
        if not candidates:
            raise EndpointNotFound(f"no {kind} named {name!r} on this node or its peers")
        failure = None
        for peer in candidates:
            try:
                return self._forward(peer, kind, name, params, timeout_s)
            except PeerUnavailable as err:
                failure = failure or err
                if not err.connect_failed:
                    raise
        raise failure

    def _forward(self, peer: Peer, kind: str, name: str, params: dict, timeout_s: float | None):
        read_s = timeout_s if timeout_s is not None else self._call_timeout_s + peer.timeout_s
        timeout = (min(peer.timeout_s, read_s), read_s)
        path, what = f"/{kind}/{quote(name, safe='')}", f"{kind} {name!r}"
        if kind == "view":
            response = self._request(peer, "GET", path, what, timeout, params=query_string(params))
            response.encoding = response.encoding or "utf-8"
            return response.text
        response = self._request(peer, "POST", path, what, timeout, json=params)
        try:
            return response.json()
        except ValueError:
            raise PeerUnavailable(f"{what} at peer {peer.url}: the answer is not JSON", peer.url) from None

    def _request(self, peer: Peer, method: str, path: str, what: str, timeout, **kwargs):
        """Send one request to ``peer`` with its token. :returns: the 2xx response.

        :raises PeerUnavailable: unreachable, refused the token, or an answer without an error body.
        :raises PeerTimeout: accepted, but no answer in time.
        :raises RelayedError: the peer's error answer.
        """
        headers = {"Accept": "application/json", FORWARDED_HEADER: "1"}
        if peer.token is not None:
            headers["Authorization"] = f"Bearer {peer.token}"
        with self._lock:
            self._in_process()
            session = self._session
        try:
            response = session.request(method, peer.url + path, headers=headers, timeout=timeout,
                                       allow_redirects=False, **kwargs)
        except requests.ConnectionError as err:  # ConnectTimeout included
            self._mark(peer, f"cannot reach {peer.url} ({type(err).__name__})")
            raise PeerUnavailable(f"{what}: peer {peer.url} cannot be reached ({type(err).__name__})",
                                  peer.url, connect_failed=True) from None
        except requests.Timeout:
            raise PeerTimeout(f"{what}: peer {peer.url} did not answer within {timeout[1]:g} s", peer.url) from None
        except requests.RequestException as err:
            raise PeerUnavailable(f"{what}: peer {peer.url} failed ({type(err).__name__})", peer.url) from None
        if response.status_code < 400:
            self._mark(peer, None)
            return response
        error = _error_of(response)
        if response.status_code in (401, 403):
            raise PeerUnavailable(f"{what}: peer {peer.url} refused this node's token ({response.status_code}"
                                  f"{': ' + str(error.get('message')) if error else ''})", peer.url)
        if error is None:
            raise PeerUnavailable(f"{what}: peer {peer.url} answered {response.status_code} {response.reason}",
                                  peer.url)
        self._mark(peer, None)
        raise RelayedError(error, peer.url)

    def _mark(self, peer: Peer, error: str | None) -> None:
        """A call found ``peer`` up (``None``) or down: ``/schema`` shows it at once."""
        with self._lock:
            for state in self._states:
                if state.peer is peer and state.fetched_at != _NEVER:
                    self._set_error(state, error)

    @staticmethod
    def _set_error(state: _PeerState, error: str | None) -> None:
        """Record whether a peer answered, logging when that changes. Called with the lock held."""
        if error is not None and state.error is None:
            log.warning("peer %s is unavailable: %s", state.peer.url, error)
        elif error is None and state.error is not None:
            log.info("peer %s answers again", state.peer.url)
        state.error = error


def _error_of(response) -> dict | None:
    """:returns: the ``error`` object of a JSON error answer, or ``None``."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    return error if isinstance(error, dict) and error.get("code") else None

