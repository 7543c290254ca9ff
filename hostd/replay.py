"""``hostd replay FILE...``: feed tracking-log files to a running daemon (off-line mode).

The files are read with :mod:`hostd.logfile`; events go to ``POST {url}/event``
in batches (a JSON list each), lines that are not events go to a quarantine
file (JSON lines ``{"file", "line", "reason", "text"}``) that
``--from-quarantine`` feeds again once fixed. Sending is idempotent (the daemon
keeps each event once, by identity), so a replay that stopped half-way is
simply run again.
"""
from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

import click
import requests

from .admin import daemon_options
from .logfile import LogEvent, read_events, read_quarantine

__all__ = ["replay", "ReplayError", "Sender", "QuarantineFiles", "default_quarantine_path"]

_FILE = click.Path(exists=True, dir_okay=False, readable=True)
_NEXT_QUARANTINE = re.compile(r"^(?P<base>.*)\.quarantine(?:-(?P<n>\d+))?$")
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] [^'\")]+")


class ReplayError(Exception):
    """Feeding cannot go on (the daemon refused a batch or cannot be reached)."""


def default_quarantine_path(path, from_quarantine: bool) -> Path:
    """Where lines of ``path`` that are not events go when ``--quarantine`` is not given.

    In the current directory, since the inputs may be read-only:
    ``<basename>.quarantine.jsonl`` for a log; for a quarantine file
    ``X.quarantine[-N].jsonl``, the next one, ``X.quarantine-<N+1>.jsonl``.

    :param path: an input file.
    :param from_quarantine: whether it is a quarantine file being fed again.
    :returns: a path relative to the current directory.
    """
    name = Path(path).name
    if from_quarantine:
        stem = name[:-len(".jsonl")] if name.endswith(".jsonl") else name
        match = _NEXT_QUARANTINE.match(stem)
        if match:
            return Path(f"{match['base']}.quarantine-{int(match['n'] or 1) + 1}.jsonl")
        return Path(f"{stem}.quarantine.jsonl")
    return Path(f"{name}.quarantine.jsonl")


class QuarantineFiles:
    """The quarantine files of a run, each created (or emptied) when its first line comes."""

    def __init__(self):
        self._handles: dict[Path, object] = {}
        self.counts: Counter = Counter()

    def write(self, path: Path, item) -> None:
        """Append one :class:`~hostd.logfile.Quarantined` as a JSON line to ``path``."""
        handle = self._handles.get(path)
        if handle is None:
            handle = self._handles[path] = open(path, "w", encoding="utf-8")
        handle.write(json.dumps(item.entry(), ensure_ascii=False) + "\n")
        self.counts[path] += 1

    def close(self) -> None:
        """Close the files written."""
        for handle in self._handles.values():
            handle.close()


def _lines_of(batch: list[LogEvent]) -> str:
    """:returns: where a batch's events come from, e.g. ``a.log lines 1-500``."""
    parts = []
    for source in dict.fromkeys(item.source for item in batch):
        numbers = [item.line for item in batch if item.source == source]
        parts.append(f"{source} line{'s' if len(numbers) > 1 else ''} "
                     f"{min(numbers)}{'-' + str(max(numbers)) if len(numbers) > 1 else ''}")
    return ", ".join(parts)


def _error_message(response) -> tuple[str, object]:
    """:returns: the message of an error answer, and the index of the bad item if it names one."""
    try:
        error = response.json()["error"]
        return f"{error['code']}: {error['message']}", error.get("index")
    except (ValueError, KeyError, TypeError):
        return response.text.strip()[:300] or response.reason, None


def _late_answer(response) -> Counter | None:
    """:returns: the counts of a 504 that says the events are logged but realtime handlers are late."""
    try:
        error = response.json()["error"]
        return Counter(accepted=int(error["accepted"]), duplicates=int(error["duplicates"]), late=1)
    except (ValueError, KeyError, TypeError):
        return None


class Sender:
    """POSTs batches of events to ``{url}/event``.

    :param url: the daemon's base URL.
    :param token: bearer token, or ``None``.
    :param timeout_s: how long to wait for each answer.
    """

    def __init__(self, url: str, token: str | None, timeout_s: float):
        self.endpoint = url.rstrip("/") + "/event"
        self._timeout = timeout_s
        self._session = requests.Session()
        self._session.headers["Content-Type"] = "application/json"
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        """Close the HTTP connections."""
        self._session.close()

    def send(self, batch: list[LogEvent]) -> Counter:
        """Send one batch; one too large for the daemon (413) is sent in halves.

        :returns: ``accepted`` and ``duplicates`` as the daemon counted them, and
            ``late``: how many of the requests were answered 504 because realtime
            handlers did not finish in time (the events are logged all the same).
        :raises ReplayError: the daemon refused it or could not be reached.
        """
        body = json.dumps([item.event for item in batch], ensure_ascii=False).encode("utf-8")
        try:
            response = self._session.post(self.endpoint, data=body, timeout=self._timeout)
        except requests.Timeout:
            raise ReplayError(f"no answer from {self.endpoint} within {self._timeout:g} s for "
                              f"{_lines_of(batch)}: these events may or may not be logged") from None
        except requests.ConnectionError as err:
            found = _ERRNO_TEXT.search(str(err))
            raise ReplayError(f"cannot connect to {self.endpoint} ({found.group(0) if found else err}); "
                              "is `hostd serve` running there?") from None
        except requests.RequestException as err:
            raise ReplayError(f"cannot send to {self.endpoint}: {err}") from None
        if response.status_code == 413 and len(batch) > 1:
            half = len(batch) // 2
            return self.send(batch[:half]) + self.send(batch[half:])
        if response.status_code == 504:
            late = _late_answer(response)
            if late is not None:
                return late
        if response.status_code not in (200, 202):
            message, index = _error_message(response)
            if index is not None and isinstance(index, int) and 0 <= index < len(batch):
                message += f" (item {index} is {_lines_of([batch[index]])})"
            hint = {400: "the daemon refused the batch; nothing of it was stored",
                    401: "the daemon wants a valid --token", 403: "the daemon refused the --token",
                    413: "a single event is over the daemon's limits.max_body_mb"}.get(response.status_code, "")
            raise ReplayError(f"{self.endpoint} answered {response.status_code} for {_lines_of(batch)}: "
                              f"{message}" + (f"; {hint}" if hint else ""))
        try:
            answer = response.json()
            return Counter(accepted=int(answer["accepted"]), duplicates=int(answer["duplicates"]))
        except (ValueError, KeyError, TypeError):
            raise ReplayError(f"{self.endpoint} answered {response.status_code} for {_lines_of(batch)} "
                              f"without the expected JSON counts: {response.text[:200]!r} "
                              "(is --url a hostd daemon?)") from None


class _Run:
    """One replay: the counters, the progress bar, the batches."""

    def __init__(self, sender: Sender, batch_size: int, quarantine: QuarantineFiles, bar):
        self.sender, self.batch_size, self.quarantine, self.bar = sender, batch_size, quarantine, bar
        self.counts = Counter()

    def feed(self, path: str, reader, quarantine_path: Path) -> None:
        position = 0

        def on_line(offset):
            nonlocal position
            self.counts["lines"] += 1
            self.bar.update(offset - position)
            position = offset

        batch: list[LogEvent] = []
        for item in reader(path, on_line=on_line):
            if isinstance(item, LogEvent):
                self.counts["events"] += 1
                batch.append(item)
                if len(batch) >= self.batch_size:
                    self._send(batch)
                    batch = []
            else:
                self.quarantine.write(quarantine_path, item)
                self.counts["quarantined"] += 1
        if batch:
            self._send(batch)

    def _send(self, batch) -> None:
        self.counts.update(self.sender.send(batch))
        self.counts["sent"] += len(batch)

    def summary(self) -> str:
        c = self.counts
        skipped = c["lines"] - c["events"] - c["quarantined"]
        where = ", ".join(f"{os.path.abspath(p)}: {n}" for p, n in self.quarantine.counts.items())
        return "\n".join([
            f"lines read: {c['lines']}",
            f"events read: {c['events']}",
            f"events sent: {c['sent']}",
            f"accepted: {c['accepted']}",
            f"duplicates: {c['duplicates']}",
            f"skipped (blank or # comment): {skipped}",
            f"quarantined: {c['quarantined']}" + (f" (written to {where})" if where else ""),
        ] + ([f"realtime handlers late (504) for {c['late']} request(s): the events are logged and "
              "hostd retries the handlers"] if c["late"] else []))


@click.command()
@click.argument("files", nargs=-1, type=_FILE)
@daemon_options
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=500, show_default=True,
              help="Events per POST /event.")
@click.option("--quarantine", "quarantine_path", type=click.Path(dir_okay=False),
              help="JSON-lines file for lines that are not events (default: ./<basename>.quarantine.jsonl "
                   "per input).")
@click.option("--from-quarantine", "quarantine_inputs", multiple=True, type=_FILE,
              help="Feed again the (fixed) lines of a quarantine file; what still fails goes to a new "
                   "quarantine file (X.quarantine-2.jsonl...). Repeatable.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.1), default=120.0, show_default=True,
              help="Seconds to wait for the daemon's answer to a batch.")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar on stderr (default: when stderr is a terminal).")
def replay(files, url, token, batch_size, quarantine_path, quarantine_inputs, timeout_s, progress):
    """Feed tracking-log files (plain or gzip, one event per line) to a running daemon.

    Lines with an LMS logger prefix are read from their JSON object; blank and
    # comment lines are skipped; other lines are quarantined. Exits 0 when every
    batch was taken, even if lines were quarantined; 1 when the daemon refused a
    batch or could not be reached (running it again is safe: events already
    logged count as duplicates).
    """
    from tqdm import tqdm
    if not files and not quarantine_inputs:
        raise click.UsageError("give at least one FILE or --from-quarantine FILE")
    if not re.match(r"https?://", url):
        raise click.BadParameter(f"{url!r} is not an http:// or https:// URL", param_hint="--url")
    # absolute paths: the quarantine entries must still say where a line came from later
    inputs = [(os.path.abspath(f), read_events, default_quarantine_path(f, False)) for f in files]
    inputs += [(os.path.abspath(q), read_quarantine, default_quarantine_path(q, True)) for q in quarantine_inputs]
    if quarantine_path:
        inputs = [(f, reader, Path(quarantine_path)) for f, reader, _ in inputs]
    for _, _, out in inputs:
        if out.exists() and any(os.path.samefile(out, f) for f, _, _ in inputs):
            raise click.UsageError(f"the quarantine file {out} is also an input; choose another with --quarantine")

    sender = Sender(url, token, timeout_s)
    quarantine = QuarantineFiles()
    total = sum(os.path.getsize(f) for f, _, _ in inputs)
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
               disable=None if progress is None else not progress, desc="replay")
    run = _Run(sender, batch_size, quarantine, bar)
    failure = None
    try:
        for path, reader, out in inputs:
            run.feed(path, reader, out)
    except ReplayError as err:
        failure = err
    except OSError as err:
        failure = ReplayError(f"{err.filename or 'file error'}: {err.strerror or err}")
    finally:
        bar.close()
        quarantine.close()
        sender.close()
    click.echo(run.summary())
    if failure is not None:
        raise click.ClickException(f"{failure}\nStopped there; running the same replay again is safe "
                                   "(events already logged count as duplicates).")
