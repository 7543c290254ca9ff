"""Hostile: tries to read (and write) files that are not its own. Not a module to deploy."""
import os

from sandbox import query


def _outcome(action):
    try:
        return f"ok: {action()!r}"[:200]
    except Exception as err:  # the test wants the exact failure
        return type(err).__name__


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


def _write(path):
    with open(path, "w", encoding="utf-8") as handle:
        return handle.write("pwned by peek_files")


@query()
def peek_files_status():
    return "hostile"


@query()
def peek(read: list[str], write: list[str], listdir: list[str], signal0: list[int]):
    """:returns: ``{attempt: "ok: ..." or the exception's type name}`` for each attempt
        (``signal0``: pids to probe with ``kill(pid, 0)``, which harms no one)."""
    results = {}
    for pid in signal0:
        results[f"kill -0 {pid}"] = _outcome(lambda: os.kill(pid, 0))
    for path in read:
        results[f"read {path}"] = _outcome(lambda: _read(path))
    for path in write:
        results[f"write {path}"] = _outcome(lambda: _write(path))
    for path in listdir:
        results[f"listdir {path}"] = _outcome(lambda: os.listdir(path))
    return results


@query()
def peek_own(fs):
    """The control: this module's own file store works. :returns: what it read back."""
    with fs.open("mine.txt", "w", encoding="utf-8") as handle:
        handle.write("my own data")
    with fs.open("mine.txt", "r", encoding="utf-8") as handle:
        return handle.read()
