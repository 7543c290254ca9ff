"""The module table: what every process of hostd knows about the modules.

The supervisor (:class:`hostd.host.Host`) is its only writer: it publishes the
whole table as one JSON file (mode 0600, atomically replaced) each time a
module changes state. Web workers and other readers use
:class:`ModuleTableReader`, which re-reads the file only when it was replaced,
at the cost of one ``stat`` per lookup.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from sandbox.errors import EndpointNotFound, ModuleNotRunning, Rebuilding

__all__ = ["STATES", "write_table", "ModuleTableReader", "Snapshot"]

#: Every state a module can be in, as ``/modules`` shows it.
STATES = ("starting", "running", "restarting", "crashloop", "failed", "stopped")


def write_table(path: str | Path, table: dict) -> None:
    """Atomically replace the table file with ``table`` (``{"modules": {name: record}}``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(table, handle)
    os.replace(tmp, path)


class Snapshot:
    """One version of the table, indexed for lookups by endpoint name.

    :param table: the decoded table file.
    """

    def __init__(self, table: dict):
        self.modules: dict = table.get("modules", {})
        self.properties: list = table.get("properties", [])
        self._index: dict = {}
        for record in self.modules.values():
            for endpoint in record.get("endpoints", []):
                for name in [endpoint["name"], *endpoint.get("aliases", [])]:
                    self._index[(endpoint["class"], name)] = (record, endpoint)

    def find(self, kind: str, name: str) -> tuple[dict, dict] | None:
        """:returns: ``(module record, endpoint description)`` of ``kind`` ``name``, whatever
            its module's state; ``None`` if no module has it."""
        return self._index.get((kind, name))

    def resolve(self, kind: str, name: str) -> tuple[dict, dict]:
        """Find the module serving ``kind`` ``name``.

        :returns: ``(module record, endpoint description)``.
        :raises EndpointNotFound: no module has it.
        :raises ModuleNotRunning: its module is known but not running.
        """
        found = self.find(kind, name)
        if found is None:
            raise EndpointNotFound(f"no {kind} named {name!r}")
        record, endpoint = found
        if record.get("state") != "running":
            raise ModuleNotRunning(f"module {record['name']!r} is {record.get('state')}")
        if record.get("rebuilding"):
            raise Rebuilding(f"module {record['name']!r} is rebuilding its data; try again once it caught up")
        return record, endpoint

    def endpoints(self, kinds=("view", "query")) -> list[dict]:
        """:returns: the descriptions of every endpoint of those kinds, by module then name."""
        out = []
        for name in sorted(self.modules):
            for endpoint in self.modules[name].get("endpoints", []):
                if endpoint["class"] in kinds:
                    out.append(endpoint)
        return out


_FRESH_NS = 100_000_000  # file timestamps are coarse (a clock tick): two writes may share one


class ModuleTableReader:
    """Reads the table file, re-reading it only when it was replaced.

    The file's (inode, mtime, size) tells when it changed, except for two
    replacements within one timestamp tick (inodes are reused, sizes may match):
    so a read made while the file was less than 100 ms old is repeated once more.

    :param path: the table file.
    """

    def __init__(self, path: str | Path):
        self._path = str(path)
        self._stamp = None
        self._read_at_ns = 0
        self._snapshot = Snapshot({})

    def snapshot(self) -> Snapshot:
        """:returns: the current :class:`Snapshot`."""
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return self._snapshot
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp or self._read_at_ns < st.st_mtime_ns + _FRESH_NS:
            try:
                read_at = time.time_ns()
                with open(self._path, encoding="utf-8") as handle:
                    self._snapshot = Snapshot(json.load(handle))
                self._stamp, self._read_at_ns = stamp, read_at
            except (OSError, ValueError):
                pass  # replaced while reading: keep the last good one, retry next time
        return self._snapshot
