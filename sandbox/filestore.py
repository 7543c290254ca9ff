"""A module's file store (``fs``) and the signed URLs hostd serves it through."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from urllib.parse import quote

__all__ = ["FileStore", "sign_path", "verify_path", "UnsafePath"]

_EXPIRY_FILE = ".insights-expiry.json"


class UnsafePath(ValueError):
    """A name that would leave the module's folder (``..``, absolute, symlink)."""


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


class FileStore:
    """Files private to one module, under its own folder.

    :param root: the folder (created on first use).
    :param module: the module's name (used in URLs).
    :param url_key: the module's key for signing URLs.
    """

    def __init__(self, root: str | Path, module: str, url_key: bytes):
        self._root = Path(root)
        self._module = module
        self._key = url_key

    @staticmethod
    def _normal(name: str) -> str:
        return Path(name).as_posix()

    def _path(self, name: str) -> Path:
        if not isinstance(name, str) or not name or "\x00" in name:
            raise UnsafePath(f"invalid file name {name!r}")
        if os.path.isabs(name) or ".." in Path(name).parts:
            raise UnsafePath(f"file name {name!r} leaves the module's folder")
        self._root.mkdir(parents=True, exist_ok=True)
        path = self._root / name
        current = self._root
        for part in Path(name).parts:
            current = current / part
            if current.is_symlink():
                raise UnsafePath(f"file name {name!r} goes through a symbolic link")
        return path

    def _expiries(self) -> dict:
        try:
            return json.loads((self._root / _EXPIRY_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def _purge(self, name: str | None = None) -> None:
        expiries = self._expiries()
        now = time.time()
        gone = [n for n, t in expiries.items() if t <= now and (name is None or n == name)]
        for item in gone:
            try:
                (self._root / item).unlink()
            except FileNotFoundError:
                pass
            del expiries[item]
        if gone:
            self._write_expiries(expiries)

    def _write_expiries(self, expiries: dict) -> None:
        tmp = self._root / (_EXPIRY_FILE + ".tmp")
        tmp.write_text(json.dumps(expiries))
        tmp.replace(self._root / _EXPIRY_FILE)

    def open(self, name: str, mode: str = "r", **kwargs):
        """Open a file of the module (parent folders are created when writing)."""
        path = self._path(name)
        if any(flag in mode for flag in "wax+"):
            path.parent.mkdir(parents=True, exist_ok=True)
        else:
            self._purge(self._normal(name))
        return open(path, mode, **kwargs)

    def exists(self, name: str) -> bool:
        """:returns: whether the file exists (and has not expired)."""
        path = self._path(name)
        self._purge(self._normal(name))
        return path.exists()

    def remove(self, name: str) -> None:
        """Delete a file (missing is fine)."""
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            pass

    def listdir(self, name: str = "") -> list[str]:
        """:returns: the sorted names in the module's folder (or a subfolder)."""
        self._purge()
        path = self._path(name) if name else self._root
        self._root.mkdir(parents=True, exist_ok=True)
        return sorted(n for n in os.listdir(path) if not n.startswith(_EXPIRY_FILE))

    def expire(self, name: str, seconds: float) -> None:
        """Delete the file ``seconds`` from now."""
        self._path(name)
        expiries = self._expiries()
        expiries[self._normal(name)] = time.time() + seconds
        self._write_expiries(expiries)

    def get_url(self, name: str, expires: int = 3600) -> str:
        """:returns: a URL (relative to hostd) serving the file for ``expires`` seconds."""
        self._path(name)
        until = int(time.time() + expires)
        signature = sign_path(self._key, self._module, name, until)
        return f"/fs/{self._module}/{quote(name)}?expires={until}&sig={signature}"

    @property
    def root(self) -> Path:
        """The module's folder on disk."""
        return self._root
