"""JSON as the store can hold it: parsing request bodies without letting through what BSON refuses.

Python's :mod:`json` accepts more than the store can keep: ``NaN`` and
``Infinity`` (not JSON at all), ``1e999`` (a float overflowing to infinity),
integers of any size (BSON stops at signed 64 bits), any depth of nesting
(MongoDB stops at 100 levels), ``"\\u0000"`` in keys (BSON keys are C strings)
and lone surrogates (``"\\ud800"``: not encodable as UTF-8). Keys starting with
``$`` are refused too: MongoDB reads them as operators in queries and updates,
so a stored event could never be matched on them.

:func:`loads` parses such values into :class:`Refused` markers instead of
failing at once, so that :func:`problem` can then say where each one is: in
which item of a batch, under which key.
"""
from __future__ import annotations

import json
import math

__all__ = ["MAX_DEPTH", "Refused", "loads", "problem"]

#: Levels of nesting MongoDB accepts in one document (each object or array is a level).
MAX_DEPTH = 100
_INT_MIN, _INT_MAX = -2 ** 63, 2 ** 63 - 1
_MAX_INT_DIGITS = 20  # longer integers are out of range anyway: do not even convert them
_SHOWN = 40  # characters of a refused text quoted in a message


class Refused:
    """A value the JSON text held that the store cannot: kept to be reported where it is.

    :param reason: why it is refused, quoting the text.
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason

    def __repr__(self):
        return f"Refused({self.reason!r})"


def _quote(text: str) -> str:
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def _constant(name: str) -> Refused:
    return Refused(f"{name} is not a JSON number")


def _float(text: str):
    value = float(text)
    return value if math.isfinite(value) else Refused(f"{_quote(text)} is out of the range of a 64-bit float")


def _int(text: str):
    if len(text.lstrip("-")) <= _MAX_INT_DIGITS:
        value = int(text)
        if _INT_MIN <= value <= _INT_MAX:
            return value
    return Refused(f"{_quote(text)} is out of the range of a signed 64-bit integer")


_DECODER = json.JSONDecoder(parse_float=_float, parse_int=_int, parse_constant=_constant)


def loads(text: str):
    """Parse JSON text; values the store cannot hold become :class:`Refused` markers.

    :returns: the decoded value (check it with :func:`problem`).
    :raises ValueError: not JSON, or nested so deep the parser gave up (the message says so).
    """
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None


_SHOWN_STEPS = 8  # steps of a path shown in a message


def _where(path: list) -> str:
    shown = "".join(f"[{p}]" if isinstance(p, int) else (f".{_quote(p)}" if n else _quote(p))
                    for n, p in enumerate(path[:_SHOWN_STEPS])) or "the top level"
    return shown + ("..." if len(path) > _SHOWN_STEPS else "")


def _string_problem(text: str) -> str | None:
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"lone surrogate {text[err.start]!r} in a string (not valid Unicode)"
    return None


def _key_problem(key: str, stored: bool) -> str | None:
    if stored and "\x00" in key:
        return f"key {_quote(key)!r} holds a NUL character"
    if stored and key.startswith("$"):
        return f"key {_quote(key)!r} starts with '$' (reserved for MongoDB operators)"
    return _string_problem(key)


def _walk(value, path: list, depth: int, max_depth: int, stored: bool) -> str | None:
    if isinstance(value, str):
        reason = _string_problem(value)
    elif isinstance(value, Refused):
        reason = value.reason
    elif isinstance(value, float):
        reason = None if math.isfinite(value) else f"{value!r} is not a JSON number"
    elif isinstance(value, int) and not isinstance(value, bool):
        reason = None if _INT_MIN <= value <= _INT_MAX else "an integer out of the range of a signed 64-bit integer"
    elif isinstance(value, (dict, list)):
        if depth > max_depth:
            return f"nested deeper than {max_depth} levels"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                reason = _key_problem(key, stored)
                if reason:
                    return f"{reason} (at {_where(path)})"
            path.append(key)
            found = _walk(item, path, depth + 1, max_depth, stored)
            path.pop()
            if found:
                return found
        return None
    else:
        return None
    return f"{reason} (at {_where(path)})" if reason else None


def _leaf_ok(value) -> bool:
    kind = type(value)
    if kind is str:
        return value.isascii() or _string_problem(value) is None
    if kind is float:
        return math.isfinite(value)
    if kind is int:
        return _INT_MIN <= value <= _INT_MAX
    return kind is not Refused


def _all_fine(value, max_depth: int, stored: bool) -> bool:
    """The common case, fast: whether nothing is wrong, without tracking where."""
    stack = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        kind = type(container)
        if kind is dict:
            for key, item in container.items():
                if stored and (key[:1] == "$" or "\x00" in key) or not (key.isascii() or _leaf_ok(key)):
                    return False
                if type(item) in (dict, list):
                    stack.append((item, depth + 1))
                elif not _leaf_ok(item):
                    return False
        elif kind is list:
            for item in container:
                if type(item) in (dict, list):
                    stack.append((item, depth + 1))
                elif not _leaf_ok(item):
                    return False
        elif not _leaf_ok(container):
            return False
        else:
            continue
        if depth > max_depth:
            return False
    return True


def problem(value, max_depth: int = MAX_DEPTH, stored: bool = True) -> str | None:
    """Find the first thing in a decoded value that the store could not hold.

    :param value: what :func:`loads` gave (or a part of it).
    :param max_depth: levels of objects and arrays allowed, ``value`` itself being the first.
    :param stored: the value is to be stored as it is, so its keys must suit the store (no
        NUL, no leading ``$``); ``False`` for values that only travel (request parameters,
        which may well hold a MongoDB filter).
    :returns: ``None`` when all is well, else the reason and where (``"... (at a.b[2])"``).
    """
    if _all_fine(value, max_depth, stored):
        return None
    return _walk(value, [], 1, max_depth, stored)  # slower: finds what and where
