"""A Python client: an Insights server's views and queries as Python functions.

    from hostd.client import Insights

    ins = Insights("http://127.0.0.1:8000", token="...")
    ins.query.grades(course="6.002x")      # a real signature: help(ins.query.grades)
    html = ins.view.hello_user(user="bob")

Names, signatures and docstrings come from the server's ``/schema``, fetched on
first use and again when a name is not found. The same object can span several
servers (:meth:`Insights.merge`), hide names and force parameters by a token-like
policy (:meth:`Insights.restrict`), or run a folder of modules off-line
(:meth:`Insights.local`). Errors are the caller errors of
:mod:`sandbox.endpoints`, which extend the domain errors of :mod:`sandbox.errors`.
"""
from __future__ import annotations

import threading
from urllib.parse import quote

import requests

from sandbox.endpoints import (Crashed, Endpoints, Forbidden, NotFound, NotRunning, Timeout, Unavailable,
                               caller_error, query_string)
from sandbox.errors import BadParameter, EndpointNotFound, InsightsError, ModuleRaised, ModuleTimeout

from . import policy as rules

__all__ = ["Insights", "Policy", "NameCollision", "InsightsError", "NotFound", "EndpointNotFound", "BadParameter",
           "Forbidden", "Timeout", "ModuleTimeout", "Unavailable", "Crashed", "NotRunning", "ModuleRaised"]


class NameCollision(InsightsError):
    """Two servers of a merged client have a view (or a query) of the same name."""

    code = "conflict"


# -- where calls go ---------------------------------------------------------------
# Each backend gives the /schema entries it serves and performs calls. Copies made
# by with_timeout share their original's connections and do not own them.

class _Http:
    """A server reached over HTTP."""

    def __init__(self, url: str, token, timeout, session=None, schema=None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._token = token
        self._owner = session is None
        self._session = session or requests.Session()
        self._schema = schema if schema is not None else {}  # shared with copies: {"entries": [...]}

    def _request(self, method: str, path: str, what: str, **kwargs):
        headers = {"Accept": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            response = self._session.request(method, self.url + path, headers=headers, timeout=self.timeout,
                                             **kwargs)
        except requests.Timeout as err:
            raise Timeout(f"{what} at {self.url}: no answer within {self.timeout:g} s") from err
        except requests.ConnectionError as err:
            raise Unavailable(f"{what}: cannot reach {self.url}: {err}") from err
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                if not isinstance(error, dict):
                    raise TypeError(error)
            except (ValueError, KeyError, TypeError):
                error = {"message": response.text[:500] or response.reason}
            err = caller_error(error, response.status_code)
            err.server = self.url
            raise err
        return response

    def entries(self, refresh: bool) -> list[dict]:
        if refresh or "entries" not in self._schema:
            entries = self._request("GET", "/schema", "GET /schema").json()
            self._schema["entries"] = [{**e, "origin": self.url} for e in entries]
        return self._schema["entries"]

    def call(self, kind: str, name: str, params: dict):
        path = f"/{kind}/{quote(name, safe='')}"
        if kind == "view":
            return self._request("GET", path, f"view {name!r}", params=query_string(params)).text
        return self._request("POST", path, f"query {name!r}", json=params).json()

    def with_timeout(self, seconds) -> "_Http":
        return _Http(self.url, self._token, seconds, self._session, self._schema)

    def close(self) -> None:
        if self._owner:
            self._session.close()

    def __str__(self):
        return self.url


class _Local:
    """Modules run off-line by a :class:`~sandbox.testing.ModulesHarness`."""

    def __init__(self, harness, where: str, timeout, lock=None, owner=True):
        self.harness = harness
        self.timeout = timeout
        self._where = where
        self._lock = lock or threading.Lock()  # the harness's sockets belong to one caller at a time
        self._owner = owner

    def entries(self, refresh: bool) -> list[dict]:
        with self._lock:
            return [{**e, "origin": self._where} for e in self.harness.schema()]

    def call(self, kind: str, name: str, params: dict):
        with self._lock:
            try:
                return self.harness.call(kind, name, params, self.timeout)
            except InsightsError as err:
                raise caller_error(err.to_reply_fields()) from err

    def with_timeout(self, seconds) -> "_Local":
        return _Local(self.harness, self._where, seconds, self._lock, owner=False)

    def close(self) -> None:
        if self._owner:
            self.harness.stop()

    def __str__(self):
        return self._where


class _Merged:
    """Several backends as one; a name served by two of them is a :class:`NameCollision`."""

    def __init__(self, members: list):
        self.members = members
        self._owners: dict = {}

    def entries(self, refresh: bool) -> list[dict]:
        owners, out = {}, []
        for member in self.members:
            for entry in member.entries(refresh):
                key = (entry["class"], entry["name"])
                if key in owners:
                    raise NameCollision(f"{entry['class']} {entry['name']!r} is served by both {owners[key]}"
                                        f" and {member}; restrict one of them to hide it")
                owners[key] = member
                out.append(entry)
        self._owners = owners
        return out

    def call(self, kind: str, name: str, params: dict):
        member = self._owners.get((kind, name))
        if member is None:
            self.entries(True)
            member = self._owners.get((kind, name))
        if member is None:
            raise NotFound(f"no {kind} named {name!r} on {self}")
        return member.call(kind, name, params)

    def with_timeout(self, seconds) -> "_Merged":
        return _Merged([m.with_timeout(seconds) for m in self.members])

    def close(self) -> None:
        for member in self.members:
            member.close()

    def __str__(self):
        return " + ".join(str(m) for m in self.members)


class Policy(rules.Policy):
    """Which names a client may see, and which parameters are forced, like a token's policy.

    The rules are hostd's own (:mod:`hostd.policy`), except that the client does not
    know which names are aliases of each other: a denied name hides only itself.

    :param policy: ``{"default": "allow"|"deny", "allow": [...], "deny": [...], "fix": {...},
        "scopes": [...]}``, every key optional; a ``[[auth.tokens]]`` entry of hostd's
        configuration is accepted as it is (its ``name``, ``token`` and ``token_sha256``
        are ignored). A name in ``deny`` is hidden, else one in ``allow`` is shown, else
        ``default`` decides (``"deny"`` when absent). ``scopes``, when given, hides the
        views unless it has ``"views"`` and the queries unless it has ``"queries"``.
        ``fix`` maps parameters to forced values; a parameter listed without a value (a
        list of names, or a ``None`` value) takes its value from ``context``.
    :param context: values for the parameters ``fix`` names without a value
        (e.g. the signed-in user's ``{"user": "bob", "course": "6.002x"}``).
    :raises ValueError: an unknown key or value, or a parameter to fix missing from ``context``.
    """

    _KEYS = {"default", "allow", "deny", "fix", "scopes", "name", "token", "token_sha256"}

    def __init__(self, policy: dict, context: dict | None = None):
        unknown = set(policy) - self._KEYS
        if unknown:
            raise ValueError(f"unknown policy key(s) {sorted(unknown)}; known: {sorted(self._KEYS)}")
        default = policy.get("default", "deny")
        if default not in ("allow", "deny"):
            raise ValueError(f"policy 'default' must be 'allow' or 'deny', not {default!r}")
        fix = policy.get("fix", {})
        fix = dict.fromkeys(fix) if isinstance(fix, (list, tuple)) else dict(fix)
        context = context or {}
        for param, value in fix.items():
            if value is None:
                if param not in context:
                    raise ValueError(f"policy fixes {param!r} from the context, which has no {param!r}")
                fix[param] = context[param]
        super().__init__(default=default, allow=frozenset(policy.get("allow", ())),
                         deny=frozenset(policy.get("deny", ())), fix=fix, name=policy.get("name"),
                         scopes=None if policy.get("scopes") is None else frozenset(policy["scopes"]))


class _Restricted:
    """A backend seen through a :class:`Policy`."""

    def __init__(self, inner, policy: Policy):
        self.inner = inner
        self.policy = policy

    def entries(self, refresh: bool) -> list[dict]:
        return [self.policy.entry(e) for e in self.inner.entries(refresh)
                if self.policy.allows(e["class"], e["name"])]

    def call(self, kind: str, name: str, params: dict):
        if not self.policy.allows(kind, name):
            raise NotFound(f"no {kind} named {name!r}")
        return self.inner.call(kind, name, self.policy.force(params))

    def with_timeout(self, seconds) -> "_Restricted":
        return _Restricted(self.inner.with_timeout(seconds), self.policy)

    def close(self) -> None:
        """A restricted view shares its original's connections: closing it closes nothing."""

    def __str__(self):
        return f"{self.inner} restricted{f' to {self.policy.name}' if self.policy.name else ''}"


# -- the client ----------------------------------------------------------------------
class Insights:
    """The views and queries of an Insights server, as functions.

    ``ins.query.NAME(**params)`` returns a query's JSON result, ``ins.view.NAME(**params)``
    a view's HTML. Each has the endpoint's signature and docstring (``help``, ``dir``
    and tab completion work); ``ins.query("NAME", **params)`` calls any name as is.

    :param url: the server's base URL (``http://127.0.0.1:8000``).
    :param token: sent as ``Authorization: Bearer <token>``.
    :param timeout: seconds to wait for each answer (``None``: the server's own call
        timeout decides).
    :raises NotFound: (calls) no such name; also an :class:`AttributeError`.
    :raises BadParameter: a missing, unknown or unconvertible parameter.
    :raises Forbidden: the token is missing, unknown or lacks the scope (401, 403).
    :raises Timeout: no answer within ``timeout``, or the server's call timeout (504).
    :raises Unavailable: the module is not running or died (502, 503), or the server
        cannot be reached.
    :raises ModuleRaised: the module's function raised (500).
    """

    def __init__(self, url: str, token: str | None = None, timeout: float | None = None):
        self._use(_Http(url, token, timeout))

    @classmethod
    def _over(cls, backend) -> "Insights":
        client = cls.__new__(cls)
        client._use(backend)
        return client

    def _use(self, backend) -> None:
        self._backend = backend
        #: the queries, one attribute each
        self.query = Endpoints("query", backend.entries, backend.call)
        #: the views, one attribute each
        self.view = Endpoints("view", backend.entries, backend.call)

    def schema(self, refresh: bool = False) -> list[dict]:
        """:returns: the ``/schema`` entries this client serves (each with its ``origin``).

        :param refresh: ask the server(s) again rather than use what was fetched.
        """
        return [dict(e) for e in self._backend.entries(refresh)]

    def with_timeout(self, seconds: float | None) -> "Insights":
        """:returns: a copy waiting ``seconds`` for each answer (sharing this client's connections)."""
        return self._over(self._backend.with_timeout(seconds))

    @classmethod
    def merge(cls, clients) -> "Insights":
        """One client over several servers (or local module folders).

        A view or query name served by more than one of them is an error, not a silent
        choice: hide it from all but one with :meth:`restrict`. Closing the merged client
        closes the clients it was built from.

        :param clients: :class:`Insights` objects.
        :raises NameCollision: a name is served twice (checked now and at each schema refresh).
        """
        merged = cls._over(_Merged([c._backend for c in clients]))
        merged.schema(refresh=True)
        return merged

    def restrict(self, policy: dict, context: dict | None = None) -> "Insights":
        """:returns: a view of this client limited by ``policy`` (see :class:`Policy`): denied
            names vanish from ``dir()`` and raise :class:`NotFound`; fixed parameters are
            always sent with their forced value and vanish from signatures.

        :raises ValueError: a malformed policy, or a parameter to fix missing from ``context``.
        """
        return self._over(_Restricted(self._backend, Policy(policy, context)))

    @classmethod
    def local(cls, modules_dir, timeout: float | None = None, **harness_options) -> "Insights":
        """A client over a folder of modules run off-line, each in its own sandbox, by a
        :class:`~sandbox.testing.ModulesHarness` (one host, an embedded store, no web server).

        Use it as a context manager, or call :meth:`close`, to stop the modules. Feed it
        events with ``ins.harness.send_events([...])``.

        :param modules_dir: the folder of modules.
        :param timeout: seconds to wait for each answer (at most each module's own limit).
        :param harness_options: ``data_dir`` (keep the store there across runs), ``mongo_url``,
            ``settings``, ``properties``, as :class:`~sandbox.testing.ModulesHarness` takes them.
        :raises ModuleLoadError: a module of the folder did not load.
        """
        from sandbox.testing import ModulesHarness
        harness = ModulesHarness(modules_dir, **harness_options).start()
        return cls._over(_Local(harness, f"local {modules_dir}", timeout))

    @property
    def harness(self):
        """The :class:`~sandbox.testing.ModulesHarness` of a :meth:`local` client (else ``None``)."""
        return getattr(self._backend, "harness", None)

    def close(self) -> None:
        """Close connections and stop local modules (copies made by :meth:`with_timeout` and
        :meth:`restrict` share their original's and leave them open)."""
        self._backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<Insights {self._backend}>"
