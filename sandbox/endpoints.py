"""The caller's side of views and queries, shared by every way of calling them.

The HTTP client (:mod:`hostd.client`) and the ``query``/``view`` objects injected
into modules (:mod:`sandbox.upcalls`) both present endpoints as an
:class:`Endpoints` namespace (``query.grades(course="x")``) whose functions carry
real signatures and docstrings built from ``/schema`` entries, and both raise the
errors below. They extend the domain errors of :mod:`sandbox.errors`, so
``except EndpointNotFound`` or ``except ModuleTimeout`` reads the same in a
module, in hostd and in a program using the client.
"""
from __future__ import annotations

import inspect
import json

from .errors import (BadParameter, EndpointNotFound, InsightsError, ModuleCrashed, ModuleLoadError,
                     ModuleNotRunning, ModuleRaised, ModuleTimeout)

__all__ = ["Forbidden", "Unavailable", "NotFound", "Crashed", "NotRunning", "Timeout",
           "caller_error", "query_string", "check_arguments", "make_function", "Endpoints"]


# -- errors --------------------------------------------------------------------
class Forbidden(InsightsError):
    """The server refused the token: missing or unknown (401), or lacking the scope (403)."""

    code = "forbidden"


class Unavailable(InsightsError):
    """The endpoint exists but cannot answer now: its module is not running, its process
    died during the call (502/503), or the server cannot be reached."""

    code = "unavailable"


class NotFound(EndpointNotFound, AttributeError):
    """No view or query of that name (404); also an :class:`AttributeError`, so
    ``hasattr(ins.query, "x")`` and ``getattr(ins.query, "x", None)`` work."""


class Crashed(ModuleCrashed, Unavailable):
    """The module's process died during the call (502)."""


class NotRunning(ModuleNotRunning, Unavailable):
    """The module is known but its sandbox is not running (503)."""


class Timeout(ModuleTimeout, TimeoutError):
    """No answer in time: the server's call timeout (504) or the caller's own."""


_BY_CODE = {
    "not_found": NotFound, "bad_parameter": BadParameter, "forbidden": Forbidden,
    "unauthorized": Forbidden, "timeout": Timeout, "crashed": Crashed, "not_running": NotRunning,
    "store_unavailable": Unavailable, "peer_unavailable": Unavailable, "module_error": ModuleRaised,
    "load_error": ModuleLoadError,
}
_BY_STATUS = {400: BadParameter, 401: Forbidden, 403: Forbidden, 404: NotFound, 500: ModuleRaised,
              502: Crashed, 503: Unavailable, 504: Timeout}


def caller_error(error: dict, status: int | None = None) -> InsightsError:
    """Build the error a caller raises from an ``{"code", "message", ...}`` error map.

    :param error: the ``error`` member of an HTTP error body or of a protocol reply.
    :param status: the HTTP status, used when the code is missing or unknown.
    :returns: the error, with ``status`` and (for a bad parameter) ``param`` attributes.
    """
    code, message = error.get("code"), str(error.get("message", ""))
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or InsightsError
    if cls is BadParameter:
        exc = BadParameter(error.get("param"), "")
        exc.args = (message,)
    else:
        exc = cls(message)
    exc.status = status
    return exc


def query_string(params: dict) -> dict:
    """Encode a view's parameters the way hostd converts them back (lists: the key repeated).

    :returns: ``{name: text or [texts]}`` for ``requests``' ``params``; ``None`` values are left out.
    """
    def text(value):
        if isinstance(value, bool):
            return "true" if value else "false"
        return json.dumps(value) if isinstance(value, dict) else str(value)
    return {name: [text(v) for v in value] if isinstance(value, (list, tuple)) else text(value)
            for name, value in params.items() if value is not None}


# -- functions with real signatures ---------------------------------------------
_ANNOTATIONS = {"str": str, "int": int, "float": float, "bool": bool, "list[str]": list[str],
                "list[int]": list[int], "list[float]": list[float], "list[bool]": list[bool]}


def _signature(entry: dict) -> inspect.Signature:
    parameters = []
    for param in entry["params"]:
        default = inspect.Parameter.empty if param["required"] else param["default"]
        parameters.append(inspect.Parameter(param["name"], inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=_ANNOTATIONS.get(param["type"], inspect.Parameter.empty)))
    returns = str if entry["class"] == "view" else inspect.Signature.empty
    return inspect.Signature(parameters, return_annotation=returns)


def _docstring(entry: dict) -> str:
    where = f" at {entry['origin']}" if entry.get("origin") else ""
    about = f"{entry['class'].capitalize()} ``{entry['name']}`` of module ``{entry['module']}``{where}."
    doc = inspect.cleandoc(entry.get("doc") or "")
    return f"{doc}\n\n{about}" if doc else about


def check_arguments(entry: dict, params: dict) -> None:
    """Check call arguments against an endpoint's ``/schema`` parameters.

    :raises BadParameter: a required parameter is missing, or one it does not take is given.
    """
    known = {p["name"]: p for p in entry["params"]}
    for name in params:
        if name not in known:
            raise BadParameter(name, f"not a parameter of {entry['class']} {entry['name']!r}"
                                     f" (it takes: {', '.join(known) or 'none'})")
    for name, param in known.items():
        if param["required"] and name not in params:
            raise BadParameter(name, "missing")


def make_function(entry: dict, call):
    """Make the function standing for one endpoint.

    :param entry: its ``/schema`` entry (``class``, ``name``, ``module``, ``params``, ``doc``;
        optionally ``origin``, where it is served, for the docstring).
    :param call: ``call(params)`` performing the call.
    :returns: a function with the endpoint's signature (keyword-only parameters) and docstring.
    """
    def endpoint(**params):
        return call(params)

    endpoint.__name__ = entry["name"] if entry["name"].isidentifier() else "endpoint"
    endpoint.__qualname__ = f"{entry['class']}.{entry['name']}"
    endpoint.__module__ = entry["module"]
    endpoint.__doc__ = _docstring(entry)
    endpoint.__signature__ = _signature(entry)
    return endpoint


# -- the namespace ---------------------------------------------------------------
class Endpoints:
    """``query`` or ``view``: one attribute per endpoint of that kind.

    ``ns.NAME(**params)`` calls it with its signature checked; ``ns("NAME", **params)``
    calls any name as is (names that are not identifiers, extra parameters for a
    function that takes ``params``); ``dir(ns)`` lists the known names.

    :param kind: ``"query"`` or ``"view"``.
    :param entries: ``entries(refresh)`` giving the known ``/schema`` entries (all kinds);
        ``refresh=True`` asks for a fresh copy when a name was not found.
    :param call: ``call(kind, name, params)`` performing a call.
    :param open_names: a name absent from the entries still gives a function (without a
        signature) instead of :class:`NotFound`: for callers that cannot see every name.
    :param nested: mark every domain error raised through this namespace as ``nested``
        (a module's failed call to another endpoint is the module's error, not its caller's).
    """

    def __init__(self, kind: str, entries, call, open_names: bool = False, nested: bool = False):
        self._kind = kind
        self._entries = entries
        self._call = call
        self._open = open_names
        self._nested = nested
        self._made: dict = {}  # name -> (entry, function): rebuilt when the entry changes

    def _lookup(self, name: str, refresh: bool):
        for entry in self._entries(refresh):
            if entry["class"] == self._kind and entry["name"] == name:
                return entry
        return None

    def _invoke(self, name: str, params: dict, entry=None):
        try:
            if entry is not None:
                check_arguments(entry, params)
            return self._call(self._kind, name, params)
        except InsightsError as err:
            if self._nested:
                err.nested = True
            raise

    def __getattr__(self, name: str):
        if name.startswith("_"):  # Python's and IPython's probes are never endpoints
            raise AttributeError(name)
        entry = self._lookup(name, False) or self._lookup(name, True)
        if entry is None:
            if self._open:
                return self._generic(name)
            known = ", ".join(self.__dir__()) or "none"
            raise NotFound(f"no {self._kind} named {name!r} (known: {known})")
        made = self._made.get(name)
        if made is None or made[0] != entry:
            function = make_function(entry, lambda params: self._invoke(name, params, entry))
            made = self._made[name] = (entry, function)
        return made[1]

    def _generic(self, name: str):
        def endpoint(**params):
            return self._invoke(name, params)
        endpoint.__name__ = name
        endpoint.__qualname__ = f"{self._kind}.{name}"
        endpoint.__doc__ = f"{self._kind.capitalize()} ``{name}`` of another module, called through hostd."
        return endpoint

    def __call__(self, name: str, /, **params):
        """Call endpoint ``name`` with ``params`` as they are (no signature check)."""
        return self._invoke(name, params)

    def __dir__(self):
        return sorted({e["name"] for e in self._entries(False)
                       if e["class"] == self._kind and e["name"].isidentifier()})

    def __repr__(self):
        try:
            names = ", ".join(self.__dir__()) or "none known"
        except InsightsError as err:  # a repr must not raise because a server is away
            names = f"unknown ({type(err).__name__})"
        return f"<{self._kind} endpoints: {names}>"
