"""Reading edX tracking logs as they are found on disk, one line at a time.

A line is one of:

* a JSON object: an event;
* the same object after a logger prefix, as the LMS writes it
  (``2023-05-23 13:53:13,461 INFO 20 [tracking] [user 6] [ip 1.2.3.4]
  logger.py:41 - {...}``): the object starts at the first ``{`` after ``" - "``,
  or at the first ``{`` of the line when there is no ``" - {"``;
* blank, or a ``#`` comment: skipped;
* anything else (invalid JSON, JSON that is not an object, bytes that are not
  UTF-8): *quarantined*, with its line number, a reason and its text, so that
  nothing is fatal and nothing is silently dropped.

Gzip files are recognised by their magic bytes, whatever their name. A
quarantine file (JSON lines of :meth:`Quarantined.entry`) is read back by
:func:`read_quarantine`, so lines fixed by hand can be fed again.
"""
from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterator
from typing import NamedTuple

from . import strictjson
from .eventbody import EVENT_MAX_DEPTH

__all__ = ["LogEvent", "Quarantined", "LogItem", "parse_line", "read_events", "read_quarantine"]

_GZIP_MAGIC = b"\x1f\x8b"
_PREFIX_END = " - {"
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


class LogEvent(NamedTuple):
    """An event read from a log.

    :param source: the file it was read from.
    :param line: its line number (from 1) in that file.
    :param event: the decoded JSON object.
    """

    source: str
    line: int
    event: dict


class Quarantined(NamedTuple):
    """A line that is not an event.

    :param source: the file it was read from.
    :param line: its line number (from 1) in that file.
    :param reason: why it is not an event, for a person.
    :param text: the line without its line ending (undecodable bytes as ``\\xNN``).
    """

    source: str
    line: int
    reason: str
    text: str

    def entry(self) -> dict:
        """:returns: the line as a quarantine-file entry ``{"file", "line", "reason", "text"}``."""
        return {"file": self.source, "line": self.line, "reason": self.reason, "text": self.text}


LogItem = LogEvent | Quarantined


class _BadLine(ValueError):
    """A line that cannot be an event; the message is the quarantine reason."""


def parse_line(text: str) -> dict | None:
    """Decode one log line.

    :param text: the line, without its line ending.
    :returns: the event, or ``None`` for a blank or ``#`` comment line.
    :raises ValueError: the line is not an event; the message says why.
    """
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None
    if not stripped.startswith("{"):
        try:  # a bare JSON value (array, string, number...) gets a precise reason
            value = json.loads(stripped)
        except ValueError:
            pass
        else:
            raise _BadLine(f"not a JSON object but {_JSON_KINDS.get(type(value), 'another JSON value')}")
    if stripped.startswith("{"):
        start = text.index("{")
    elif _PREFIX_END in text:
        start = text.index(_PREFIX_END) + len(_PREFIX_END) - 1
    elif "{" in text:
        start = text.index("{")
    else:
        raise _BadLine("no JSON object on the line")
    try:
        # text[start] is "{": a successful decode is always a dict
        event = json.loads(text[start:])
    except json.JSONDecodeError as err:
        where = "" if start == len(text) - len(text.lstrip()) else " (after the log prefix)"
        raise _BadLine(f"invalid JSON at column {start + err.pos + 1}{where}: {err.msg}") from None
    reason = strictjson.problem(event, EVENT_MAX_DEPTH)  # what hostd would refuse (NaN, 1e999...)
    if reason:
        raise _BadLine(reason)
    return event


def _decode(raw: bytes, first: bool) -> str:
    """:returns: the line without its ending (nor a UTF-8 BOM on line 1). :raises UnicodeDecodeError:"""
    body = raw.rstrip(b"\r\n")
    if first and body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    return body.decode("utf-8")


def _lenient(raw: bytes) -> str:
    """:returns: the line without its ending, undecodable bytes written ``\\xNN``."""
    return raw.rstrip(b"\r\n").decode("utf-8", errors="backslashreplace")


def _lines(path, on_line) -> Iterator[tuple[int, bytes | None, str | None]]:
    """:returns: ``(number, raw line, None)`` per line; ``(number, None, reason)`` if reading failed."""
    with open(path, "rb") as handle:
        stream = gzip.GzipFile(fileobj=handle, mode="rb") if handle.peek(2)[:2] == _GZIP_MAGIC else handle
        number = 0
        try:
            for number, raw in enumerate(stream, start=1):
                if on_line is not None:
                    on_line(handle.tell())
                yield number, raw, None
        except (EOFError, OSError, zlib.error) as err:  # a truncated or corrupt gzip, a read error
            kind = "gzip data" if stream is not handle else "file"
            yield number + 1, None, f"unreadable {kind} after line {number}: {err}"


def read_events(path, on_line: Callable[[int], None] | None = None) -> Iterator[LogItem]:
    """Read a tracking log (plain or gzip), line by line.

    :param path: the log file.
    :param on_line: called after each physical line (skipped ones too) with the byte
        offset reached in the file on disk (compressed bytes for gzip): for progress.
    :returns: an iterator of :class:`LogEvent` and :class:`Quarantined`, in line order.
        Blank and ``#`` comment lines give nothing. When the rest of the file cannot
        be read (a truncated gzip), one last :class:`Quarantined` with an empty text
        says after which line.
    :raises OSError: the file cannot be opened.
    """
    source = str(path)
    for number, raw, failure in _lines(path, on_line):
        if failure is not None:
            yield Quarantined(source, number, failure, "")
            return
        try:
            text = _decode(raw, number == 1)
        except UnicodeDecodeError as err:
            bad = err.object[err.start]
            yield Quarantined(source, number, f"not UTF-8: byte 0x{bad:02x} at byte {err.start + 1} "
                                              f"({err.reason})", _lenient(raw))
            continue
        try:
            event = parse_line(text)
        except _BadLine as err:
            yield Quarantined(source, number, str(err), text)
            continue
        if event is not None:
            yield LogEvent(source, number, event)


def _quarantine_entry(text: str):
    """:returns: the entry of a quarantine-file line, ``None`` to skip it. :raises ValueError: malformed."""
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None
    entry = json.loads(stripped)
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    if not isinstance(entry.get("text"), str):
        raise ValueError('no "text" string')
    line = entry.get("line")
    if not isinstance(line, int) or isinstance(line, bool) or not isinstance(entry.get("file"), str):
        raise ValueError('no "file" string and "line" number')
    return entry


def read_quarantine(path, on_line: Callable[[int], None] | None = None) -> Iterator[LogItem]:
    """Read a quarantine file back, to feed again the lines an administrator fixed.

    Each entry's ``text`` is decoded like a log line; the items keep the entry's
    original ``file`` and ``line``, so what still fails can be quarantined again
    with the same origin. Blank and ``#`` lines are skipped (commenting an entry
    out drops it). An entry that is itself malformed is quarantined with this
    file's name and line number and the whole entry as text.

    :param path: the quarantine file (JSON lines, plain or gzip).
    :param on_line: as for :func:`read_events`.
    :returns: an iterator of :class:`LogEvent` and :class:`Quarantined`.
    :raises OSError: the file cannot be opened.
    """
    source = str(path)
    for number, raw, failure in _lines(path, on_line):
        if failure is not None:
            yield Quarantined(source, number, failure, "")
            return
        try:
            entry = _quarantine_entry(_decode(raw, number == 1))
        except ValueError as err:  # UnicodeDecodeError and JSONDecodeError included
            yield Quarantined(source, number, f"malformed quarantine entry: {err}", _lenient(raw))
            continue
        if entry is None:
            continue
        try:
            event = parse_line(entry["text"])
        except _BadLine as err:
            yield Quarantined(entry["file"], entry["line"], str(err), entry["text"])
            continue
        if event is not None:  # an entry blanked out or turned into a comment is dropped
            yield LogEvent(entry["file"], entry["line"], event)
