"""A module's file store (``fs``): one interface, two backends, and the signed URLs hostd serves.

:class:`BaseFileStore` holds what every backend shares: the checks on names, the
open modes, text wrapping, staged writes, the module's quota and expiry. A write
goes to a staging file and reaches the store whole when the file is closed, so a
reader sees the old content or the new one, never a part; a write past the quota
raises :class:`~sandbox.errors.FileQuotaExceeded` and leaves the store as it was.

A backend only says where bytes and expiry times live: :class:`FileStore` in a
folder on this machine, :class:`~sandbox.gridfs_store.GridFileStore` in GridFS in
the module's own database (shared by every hostd node on that MongoDB).
:func:`open_file_store` picks one by name (the ``storage.fs`` setting).
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import io
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from .errors import FileQuotaExceeded
from .staged_file import OpenMode, StagedFile

__all__ = ["BaseFileStore", "FileStore", "open_file_store", "normal_name", "sign_path", "verify_path",
           "UnsafePath", "BACKENDS", "RESERVED_PREFIX"]

#: Names of the backends :func:`open_file_store` knows (values of ``storage.fs``).
BACKENDS = ("local", "gridfs")
#: File names starting with this are the store's own bookkeeping.
RESERVED_PREFIX = ".insights-"
_EXPIRY_FILE = RESERVED_PREFIX + "expiry.json"
_LOCK_FILE = RESERVED_PREFIX + "lock"
_STAGING_DIR = RESERVED_PREFIX + "staging"
_MIB = 1024 * 1024


class UnsafePath(ValueError):
    """A name that would leave the module's folder (``..``, absolute, symlink) or is reserved."""


def sign_path(key: bytes, module: str, name: str, expires: int) -> str:
    """:returns: the hex signature of ``/fs/{module}/{name}`` valid until ``expires``."""
    message = f"{module}/{name}|{int(expires)}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify_path(key: bytes, module: str, name: str, expires, signature: str, now=None) -> bool:
    """:returns: whether ``signature`` is valid for that file and not expired."""
    try:
        expires = int(expires)
    except (TypeError, ValueError):
        return False
    if expires < (now if now is not None else time.time()):
        return False
    return hmac.compare_digest(sign_path(key, module, name, expires), str(signature or ""))


def normal_name(name) -> str:
    """Check a file name and give its one spelling (``a//b``, ``./a/b`` and ``a/b`` are ``a/b``).

    :returns: the name with ``/`` separators and no empty or ``.`` parts.
    :raises UnsafePath: not a non-empty string, a NUL, absolute, a ``..`` part, or a part
        starting with :data:`RESERVED_PREFIX`.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise UnsafePath(f"invalid file name {name!r}")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise UnsafePath(f"file name {name!r} leaves the module's folder")
    if any(part.startswith(RESERVED_PREFIX) for part in path.parts):
        raise UnsafePath(f"file name {name!r} is reserved (names starting with {RESERVED_PREFIX!r})")
    if path.as_posix() == ".":
        raise UnsafePath(f"invalid file name {name!r}")
    return path.as_posix()


class BaseFileStore:
    """The files of one module (the injected ``fs``), whatever keeps them.

    Subclasses implement the ``_`` primitives below; names reaching them are already
    checked by :func:`normal_name`.

    :param module: the module's name (used in URLs and errors).
    :param url_key: the module's key for signing URLs.
    :param limit_mb: the most its files may take together, in MiB (``limits.fs_mb``;
        None or 0: no limit).
    """

    def __init__(self, module: str, url_key: bytes, limit_mb: float | None = None):
        self._module = module
        self._key = url_key
        self._limit_mb = limit_mb if limit_mb and limit_mb > 0 else None

    # -- the files API ------------------------------------------------------------
    def open(self, name: str, mode: str = "r", encoding=None, errors=None, newline=None):
        """Open a file of the module, as the built-in ``open`` would.

        Modes are those of ``open`` (``r``, ``w``, ``a``, ``x``, with ``+``, ``b`` or ``t``).
        Folders are created as needed. What is written reaches the store when the file
        is closed: until then readers see the previous content.

        :returns: a binary or text file object.
        :raises FileNotFoundError: reading a file that does not exist (or expired).
        :raises FileExistsError: mode ``x`` and the file exists.
        :raises IsADirectoryError: the name is a folder.
        :raises NotADirectoryError: a parent in the name is a file.
        :raises FileQuotaExceeded: (from ``write``/``close``) the write would take the
            module's files past ``limits.fs_mb``; the file is left as it was.
        :raises UnsafePath: see :func:`normal_name`.
        """
        name = normal_name(name)
        plan = OpenMode.parse(mode)
        if plan.binary and (encoding is not None or errors is not None or newline is not None):
            raise ValueError("binary mode doesn't take an encoding, errors or newline argument")
        raw = self._open_for_writing(name, plan) if plan.writes else self._open_for_reading(name)
        if plan.binary:
            return raw
        # write_through: each text write reaches the staged file at once, so a write past
        # the quota raises at that write rather than at a later flush
        text = io.TextIOWrapper(raw, io.text_encoding(encoding), errors, newline, write_through=plan.writes)
        text.mode = plan.text
        return text

    def exists(self, name: str) -> bool:
        """:returns: whether the file or folder exists (and has not expired)."""
        name = normal_name(name)
        self._drop_if_expired(name)
        return self._kind(name) is not None

    def remove(self, name: str) -> None:
        """Delete a file and its expiry (missing is fine).

        :raises IsADirectoryError: the name is a folder.
        """
        name = normal_name(name)
        if self._kind(name) == "dir":
            raise IsADirectoryError(errno.EISDIR, "is a folder", name)
        self._delete(name)

    def listdir(self, name: str = "") -> list[str]:
        """:returns: the sorted names in the module's top folder, or in folder ``name``.

        A folder exists while it holds files.

        :raises FileNotFoundError: no such folder. :raises NotADirectoryError: ``name`` is a file.
        """
        self.purge_expired()
        folder = normal_name(name) if name else ""
        if folder:
            self._require(folder, "dir")
        return sorted(self._children(folder))

    def expire(self, name: str, seconds: float) -> None:
        """Delete the file ``seconds`` from now (it stays if rewritten; :meth:`remove` forgets it).

        :raises FileNotFoundError: no such file.
        """
        name = normal_name(name)
        self._drop_if_expired(name)
        self._require(name, "file")
        self._set_expiry(name, time.time() + seconds)

    def get_url(self, name: str, expires: int = 3600) -> str:
        """:returns: a URL (relative to hostd) serving the file for ``expires`` seconds."""
        name = normal_name(name)
        until = int(time.time() + expires)
        signature = sign_path(self._key, self._module, name, until)
        return f"/fs/{self._module}/{quote(name)}?expires={until}&sig={signature}"

    def purge_expired(self, now: float | None = None) -> int:
        """Delete every file whose expiry time has come (what hostd's sweeper calls).

        :param now: the time to compare with (default: now).
        :returns: how many files were deleted.
        """
        names = self._expired(time.time() if now is None else now)
        for name in names:
            self._delete(name)
        return len(names)

    def usage(self) -> int:
        """:returns: the bytes the module's files take together (what the quota counts)."""
        return self._usage()

    def remove_stale_staging(self, older_than_s: float, now: float | None = None) -> int:
        """Delete what writers that died before closing their file left in the store.

        :param older_than_s: only what was left at least this long ago.
        :returns: how many staging files were deleted (none by default: a backend that
            stages outside the store leaves nothing there).
        """
        return 0

    # -- shared behaviour -----------------------------------------------------------
    def _drop_if_expired(self, name: str) -> None:
        when = self._expiry(name)
        if when is not None and when <= time.time():
            self._delete(name)

    def _require(self, name: str, wanted: str) -> None:
        kind = self._kind(name)
        if kind is None:
            raise FileNotFoundError(errno.ENOENT, "no such file or folder", name)
        if kind != wanted:
            error = IsADirectoryError if kind == "dir" else NotADirectoryError
            raise error(errno.EISDIR if kind == "dir" else errno.ENOTDIR, f"is a {kind}", name)

    def _open_for_reading(self, name: str):
        self._drop_if_expired(name)
        self._require(name, "file")
        return self._reader(name)

    def _open_for_writing(self, name: str, mode: OpenMode):
        self._drop_if_expired(name)
        kind = self._kind(name)
        parts = name.split("/")
        for depth in range(1, len(parts) if kind is None else 0):  # a file's parents are folders
            if self._kind("/".join(parts[:depth])) == "file":
                raise NotADirectoryError(errno.ENOTDIR, "a parent is a file", name)
        if kind == "dir":
            raise IsADirectoryError(errno.EISDIR, "is a folder", name)
        if kind is not None and mode.kind == "x":
            raise FileExistsError(errno.EEXIST, "file exists", name)
        if kind is None and mode.kind == "r":
            raise FileNotFoundError(errno.ENOENT, "no such file", name)
        room = others = None
        if self._limit_mb is not None:
            others = self._usage() - (self._size(name) if kind else 0)
            room = int(self._limit_mb * _MIB) - others
        staging = self._staging(name, kind == "file" and mode.keeps_content)

        def over_quota(size: int) -> FileQuotaExceeded:
            total = others + size
            fate = "is left as it was" if kind else "was not created"
            return FileQuotaExceeded(
                f"writing {name!r} would take module {self._module!r}'s files to {total / _MIB:.2f} MiB,"
                f" over its limit of {self._limit_mb:g} MiB (limits.fs_mb); {name!r} {fate}")

        return StagedFile(name, mode, staging, room, lambda s: self._publish(name, s), self._discard,
                           over_quota)

    # -- what a backend provides -------------------------------------------------------
    def _kind(self, name: str) -> str | None:
        """:returns: ``"file"``, ``"dir"`` (a prefix of file names) or None."""
        raise NotImplementedError

    def _size(self, name: str) -> int:
        """:returns: the size of an existing file."""
        raise NotImplementedError

    def _usage(self) -> int:
        """:returns: the total size of the module's files."""
        raise NotImplementedError

    def _children(self, folder: str) -> list[str]:
        """:returns: the names directly in an existing ``folder`` (``""``: the top)."""
        raise NotImplementedError

    def _reader(self, name: str):
        """:returns: an existing file, open for reading in binary."""
        raise NotImplementedError

    def _staging(self, name: str, copy: bool):
        """:returns: a new read-write binary file, holding the file's content when ``copy``."""
        raise NotImplementedError

    def _publish(self, name: str, staging) -> None:
        """Replace (or create) the file with the staging file's content; close the staging file."""
        raise NotImplementedError

    def _discard(self, staging) -> None:
        """Close and drop a staging file."""
        raise NotImplementedError

    def _delete(self, name: str) -> None:
        """Delete a file and its expiry; missing is fine."""
        raise NotImplementedError

    def _expiry(self, name: str) -> float | None:
        """:returns: when the file expires (a Unix time), or None."""
        raise NotImplementedError

    def _set_expiry(self, name: str, when: float) -> None:
        """Make an existing file expire at ``when``."""
        raise NotImplementedError

    def _expired(self, now: float) -> list[str]:
        """:returns: the names of the files expiring at or before ``now``."""
        raise NotImplementedError


class FileStore(BaseFileStore):
    """Files private to one module, under its own folder on this machine (``storage.fs = "local"``).

    Expiry times live in a bookkeeping file of the folder, changed under a lock so the
    module's sandbox and hostd's sweeper can both change it. Names starting with
    :data:`RESERVED_PREFIX` are that bookkeeping, and never listed.

    :param root: the folder (created on first use).
    :param module: the module's name (used in URLs).
    :param url_key: the module's key for signing URLs.
    :param limit_mb: see :class:`BaseFileStore`.
    """

    def __init__(self, root: str | Path, module: str, url_key: bytes, limit_mb: float | None = None):
        super().__init__(module, url_key, limit_mb)
        self._root = Path(root)

    @property
    def root(self) -> Path:
        """The module's folder on disk."""
        return self._root

    def _path(self, name: str) -> Path:
        """:returns: the file's path. :raises UnsafePath: a part of it is a symbolic link."""
        current = self._root
        for part in name.split("/"):
            current = current / part
            if current.is_symlink():
                raise UnsafePath(f"file name {name!r} goes through a symbolic link")
        return current

    def _kind(self, name):
        path = self._path(name)
        return "file" if path.is_file() else "dir" if path.is_dir() else None

    def _size(self, name):
        return self._path(name).stat().st_size

    def _files(self):
        """:returns: every file as ``(path, size)``, bookkeeping excepted."""
        for folder, dirs, files in os.walk(self._root):
            if folder == str(self._root):
                dirs[:] = [d for d in dirs if not d.startswith(RESERVED_PREFIX)]
                files = [f for f in files if not f.startswith(RESERVED_PREFIX)]
            for file in files:
                path = os.path.join(folder, file)
                try:
                    yield path, os.lstat(path).st_size
                except FileNotFoundError:
                    pass

    def _usage(self):
        return sum(size for _path, size in self._files())

    def _children(self, folder):
        if folder:
            return os.listdir(self._path(folder))
        names = os.listdir(self._root) if self._root.is_dir() else []
        return [n for n in names if not n.startswith(RESERVED_PREFIX)]

    def _reader(self, name):
        return open(self._path(name), "rb")

    def _staging(self, name, copy):
        folder = self._root / _STAGING_DIR
        folder.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(dir=folder, prefix="write-")
        os.close(fd)
        staging = open(path, "w+b")
        if copy:
            with open(self._path(name), "rb") as source:
                shutil.copyfileobj(source, staging)
        return staging

    def _publish(self, name, staging):
        staging.close()
        target = self._path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging.name, target)

    def _discard(self, staging):
        staging.close()
        try:
            os.unlink(staging.name)
        except FileNotFoundError:
            pass

    def _delete(self, name):
        path = self._path(name)
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            pass
        with self._expiries() as expiries:
            expiries.pop(name, None)
        for folder in path.parents:  # a folder exists while it holds files
            if folder == self._root or self._root not in folder.parents:
                break
            try:
                folder.rmdir()
            except OSError:
                break

    @contextmanager
    def _expiries(self):
        """The expiry times ``{name: time}``, locked; changes are saved on exit.

        hostd (its sweeper, its web workers) and the sandbox, which may run under
        another uid, share these files: the lock is taken on a read-only descriptor
        and the times are replaced by a new readable file, so neither needs to write
        a file the other created.
        """
        self._root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._root / _LOCK_FILE, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            expiries = self._read_expiries()
            before = dict(expiries)
            yield expiries
            if expiries != before:
                tmp_fd, tmp = tempfile.mkstemp(dir=self._root, prefix=_EXPIRY_FILE + ".")
                with open(tmp_fd, "w", encoding="utf-8") as handle:
                    os.fchmod(tmp_fd, 0o644)
                    json.dump(expiries, handle)
                os.replace(tmp, self._root / _EXPIRY_FILE)
        finally:
            os.close(fd)

    def _read_expiries(self) -> dict:
        try:
            return json.loads((self._root / _EXPIRY_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def _expiry(self, name):
        return self._read_expiries().get(name)

    def _set_expiry(self, name, when):
        with self._expiries() as expiries:
            expiries[name] = when

    def _expired(self, now):
        return [name for name, when in self._read_expiries().items() if when <= now]

    def remove_stale_staging(self, older_than_s: float, now: float | None = None) -> int:
        folder = self._root / _STAGING_DIR
        cutoff = (time.time() if now is None else now) - older_than_s
        removed = 0
        for entry in os.scandir(folder) if folder.is_dir() else ():
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass
        return removed


def open_file_store(backend: str, module: str, url_key: bytes, *, root=None, database=None,
                    limit_mb: float | None = None) -> BaseFileStore:
    """Build a module's file store.

    :param backend: ``"local"`` or ``"gridfs"`` (the ``storage.fs`` setting).
    :param module: the module's name.
    :param url_key: the module's key for signing URLs (``b""`` when no URL is made).
    :param root: the module's folder (local backend).
    :param database: the module's ``pymongo`` database (gridfs backend).
    :param limit_mb: the module's ``limits.fs_mb`` (None or 0: no limit).
    :raises ValueError: an unknown backend.
    """
    if backend == "local":
        return FileStore(root, module, url_key, limit_mb)
    if backend == "gridfs":
        from .gridfs_store import GridFileStore  # only what uses GridFS imports it
        return GridFileStore(database, module, url_key, limit_mb)
    raise ValueError(f"unknown file store backend {backend!r} (known: {', '.join(BACKENDS)})")
