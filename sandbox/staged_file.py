"""The file objects of ``fs.open``: open modes checked as ``open`` checks them, and staged writes.

A :class:`StagedFile` collects what is written in a staging file and hands it to
the store whole when closed, checking each write against the room the module's
quota leaves.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

__all__ = ["OpenMode", "StagedFile"]


@dataclass(frozen=True)
class OpenMode:
    """An ``open`` mode, checked as the built-in ``open`` checks it."""

    text: str
    kind: str  # r, w, a or x
    plus: bool
    binary: bool

    @classmethod
    def parse(cls, mode) -> "OpenMode":
        """:raises ValueError: not a mode the built-in ``open`` accepts."""
        if not isinstance(mode, str) or len(set(mode)) != len(mode) or not set(mode) <= set("rwaxbt+"):
            raise ValueError(f"invalid mode: {mode!r}")
        kinds = [char for char in mode if char in "rwax"]
        if len(kinds) != 1 or ("b" in mode and "t" in mode):
            raise ValueError(f"invalid mode: {mode!r}")
        return cls(mode, kinds[0], "+" in mode, "b" in mode)

    @property
    def writes(self) -> bool:
        """Whether the file is open for writing (anything but plain ``r``)."""
        return self.kind != "r" or self.plus

    @property
    def keeps_content(self) -> bool:
        """Whether writing starts from the file's current content (``r+``, ``a``)."""
        return self.kind in "ra"


class StagedFile(io.BufferedIOBase):
    """A file open for writing: bytes go to a staging file, published whole on close.

    Each write is checked against the room the quota leaves; the first one past it
    discards the staging file, closes this one and raises.

    :param name: the file's name in the store.
    :param mode: its :class:`OpenMode`.
    :param staging: a readable, writable, seekable binary file (the new content so far).
    :param room: the largest size the file may reach (None: no limit).
    :param publish: ``publish(staging)`` puts the content into the store (and closes staging).
    :param discard: ``discard(staging)`` drops it.
    :param over_quota: ``over_quota(size)`` builds the error for a file of ``size`` bytes.
    """

    def __init__(self, name: str, mode: OpenMode, staging, room, publish, discard, over_quota):
        super().__init__()
        self.name = name
        self.mode = mode.text
        self._plan = mode
        self._staging = staging
        self._room = room
        self._publish, self._discard, self._over_quota = publish, discard, over_quota
        self._size = staging.seek(0, io.SEEK_END)
        if mode.kind != "a":
            staging.seek(0)

    def readable(self) -> bool:
        return self._plan.plus

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _live(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file.")

    def _grow(self, size: int) -> None:
        """Allow the file to reach ``size`` bytes, or drop it. :raises FileQuotaExceeded:"""
        if size > self._size and self._room is not None and size > self._room:
            error = self._over_quota(size)
            self._abandon()
            raise error
        self._size = max(self._size, size)

    def write(self, data) -> int:
        self._live()
        data = memoryview(data).cast("B")
        if self._plan.kind == "a":
            self._staging.seek(0, io.SEEK_END)
        self._grow(self._staging.tell() + len(data))
        return self._staging.write(data)

    def truncate(self, size=None) -> int:
        self._live()
        size = self._staging.tell() if size is None else size
        self._grow(size)
        self._size = size
        return self._staging.truncate(size)

    def read(self, size=-1) -> bytes:
        self._live()
        if not self.readable():
            raise io.UnsupportedOperation("read")
        return self._staging.read(-1 if size is None else size)

    def read1(self, size=-1) -> bytes:
        return self.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._live()
        return self._staging.seek(offset, whence)

    def tell(self) -> int:
        self._live()
        return self._staging.tell()

    def flush(self) -> None:
        self._live()

    def _abandon(self) -> None:
        try:
            self._discard(self._staging)
        finally:
            super().close()

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._publish(self._staging)
        except BaseException:
            self._discard(self._staging)
            raise
        finally:
            super().close()
