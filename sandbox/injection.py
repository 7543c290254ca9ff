"""Injection by parameter name, and conversion of request parameters.

A function's signature is inspected once, when its module loads
(:func:`analyse`). At call time :func:`bind` builds the keyword arguments: the
injected names the function asked for, then each request parameter converted by
its annotation. Injected names can never come from a request: a request that
names them has them dropped. :func:`check` applies the same conversions to the
parameter descriptions of the module table, so that hostd refuses a bad
parameter before the call reaches the sandbox.
"""
from __future__ import annotations

import functools
import inspect
import math
import types
import typing
from dataclasses import dataclass

from .errors import BadParameter, ModuleLoadError

__all__ = ["INJECTED", "ALIASES", "Param", "CallSignature", "analyse", "bind", "check"]

#: Names supplied by the runtime. ``mongodb`` is an alias of ``db``.
INJECTED = frozenset({"db", "mongodb", "fs", "cache", "query", "view", "events", "emit",
                      "params", "log"})
ALIASES = {"mongodb": "db"}
_HANDLER_ONLY = frozenset({"events"})
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_INT_MIN, _INT_MAX = -2 ** 63, 2 ** 63 - 1  # what the store (BSON) and msgpack can carry
_SHOWN = 40  # characters of a value quoted in a message


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


@dataclass(frozen=True)
class Param:
    """One request parameter of an endpoint.

    :param name: its name.
    :param type: the annotation's name (``str``, ``int``, ``float``, ``bool``,
        ``list[str]``...), ``any`` when unannotated.
    :param required: whether a request must give it.
    :param default: its default (when not required), JSON-able.
    """

    name: str
    type: str
    required: bool
    default: object = None

    def describe(self) -> dict:
        """:returns: the ``/schema`` form of this parameter."""
        return {"name": self.name, "type": self.type, "required": self.required,
                "default": self.default}


@dataclass(frozen=True)
class CallSignature:
    """The result of inspecting a function once.

    :param injected: injected names the function asks for, in signature order.
    :param params: its request parameters, in signature order.
    """

    injected: tuple[str, ...]
    params: tuple[Param, ...]
    _converters: dict

    @property
    def category(self) -> str:
        """Request parameter names joined by ``+`` (``""`` for none)."""
        return "+".join(p.name for p in self.params)


def _type_name(annotation) -> str:
    if annotation is inspect.Parameter.empty:
        return "any"
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:  # Optional[X] / X | None: an X, None being its usual default
            return _type_name(rest[0])
    if isinstance(annotation, str):
        return annotation
    if typing.get_origin(annotation) is list:
        args = typing.get_args(annotation) or (str,)
        return f"list[{_type_name(args[0])}]"
    return getattr(annotation, "__name__", str(annotation))


def _scalar(type_name: str, name: str):
    def to_bool(value):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise BadParameter(name, f"expected a boolean (true/false/1/0/yes/no), got {_shown(value)}")

    def to_number(kind):
        def convert(value):
            if isinstance(value, bool):
                raise BadParameter(name, f"expected {kind.__name__}, got {_shown(value)}")
            try:
                number = kind(value)
            except (TypeError, ValueError, OverflowError):
                raise BadParameter(name, f"expected {kind.__name__}, got {_shown(value)}") from None
            if kind is float and not math.isfinite(number):
                raise BadParameter(name, f"expected a finite float, got {_shown(value)}")
            if kind is int and (isinstance(value, float) and number != value
                                or not _INT_MIN <= number <= _INT_MAX):
                raise BadParameter(name, f"expected a signed 64-bit integer, got {_shown(value)}")
            return number
        return convert

    def to_str(value):
        if isinstance(value, (dict, list)):
            raise BadParameter(name, f"expected a string, got {type(value).__name__}")
        return value if isinstance(value, str) else str(value)

    table = {"bool": to_bool, "int": to_number(int), "float": to_number(float),
             "str": to_str, "any": lambda value: value}
    if type_name not in table:
        return None
    return table[type_name]


@functools.lru_cache(maxsize=1024)
def _converter(type_name: str, name: str):
    """:returns: a function converting one request value, or ``None`` if unsupported."""
    if type_name.startswith("list[") and type_name.endswith("]"):
        item = _scalar(type_name[5:-1], name)
        if item is None:
            return None

        def to_list(value):
            values = value if isinstance(value, list) else [value]
            return [item(v) for v in values]
        return to_list
    scalar = _scalar(type_name, name)
    if scalar is None:
        return None

    def single(value):
        if isinstance(value, list) and type_name != "any":
            if len(value) != 1:
                raise BadParameter(name, "given more than once")
            value = value[0]
        return scalar(value)
    return single


def analyse(func, *, kind: str, where: str) -> CallSignature:
    """Inspect ``func`` once, at load time.

    :param kind: the endpoint kind (``events`` is only injectable into handlers).
    :param where: ``module.function`` for error messages.
    :raises ModuleLoadError: an unsupported signature, naming module, function and parameter.
    """
    injected, params, converters = [], [], {}
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable string annotations: fall back to the raw ones
        hints = {}
    for parameter in inspect.signature(func).parameters.values():
        name = parameter.name
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise ModuleLoadError(f"{where}: parameter {name!r} is positional-only; parameters"
                                  " are passed by name")
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ModuleLoadError(f"{where}: parameter {name!r}: *args/**kwargs are not supported;"
                                  " ask for 'params' to get the extra request parameters")
        if name in INJECTED:
            if name in _HANDLER_ONLY and kind != "handler":
                raise ModuleLoadError(f"{where}: parameter {name!r} is only injected into event handlers")
            injected.append(name)
            continue
        type_name = _type_name(hints.get(name, parameter.annotation))
        convert = _converter(type_name, name)
        if convert is None:
            raise ModuleLoadError(f"{where}: parameter {name!r}: unsupported annotation {type_name!r}"
                                  " (use str, int, float, bool or list[...] of them)")
        required = parameter.default is inspect.Parameter.empty
        if required and kind == "handler":
            raise ModuleLoadError(f"{where}: parameter {name!r} can never be supplied to an event"
                                  " handler; give it a default or use an injected name")
        params.append(Param(name, type_name, required, None if required else parameter.default))
        converters[name] = convert
    return CallSignature(tuple(injected), tuple(params), converters)


def bind(signature: CallSignature, request_params: dict, services) -> dict:
    """Build the keyword arguments of one call.

    :param request_params: parameters from the request (values may be lists for
        repeated query-string keys). Injected names among them are dropped.
    :param services: a callable ``services(name)`` giving the injected object.
    :raises BadParameter: a missing or unconvertible parameter.
    """
    request_params = {k: v for k, v in (request_params or {}).items() if k not in INJECTED}
    kwargs = {}
    for param in signature.params:
        if param.name in request_params:
            kwargs[param.name] = _convert(signature._converters[param.name], param.name,
                                          request_params.pop(param.name))
        elif param.required:
            raise BadParameter(param.name, "missing")
    for name in signature.injected:
        kwargs[name] = request_params if name == "params" else services(ALIASES.get(name, name))
    return kwargs


def _convert(convert, name: str, value):
    """A converter that fails in a way of its own is still the caller's bad parameter."""
    try:
        return convert(value)
    except BadParameter:
        raise
    except Exception as err:
        raise BadParameter(name, f"cannot be converted ({type(err).__name__})") from None


def check(described: list[dict], request_params: dict) -> None:
    """Check request parameters against an endpoint's parameter descriptions, as :func:`bind` would.

    :param described: the endpoint's ``params`` (:meth:`Param.describe` of each), as the
        module table publishes them.
    :param request_params: the request's parameters (lists for repeated query-string keys).
    :raises BadParameter: a missing or unconvertible parameter, named.
    """
    for param in described:
        name = param["name"]
        if name in request_params:
            convert = _converter(param["type"], name)
            if convert is not None:
                _convert(convert, name, request_params[name])
        elif param["required"]:
            raise BadParameter(name, "missing")
