"""Storage bootstrap: the data-dir lock, the embedded nx-27017 store, connections."""
from __future__ import annotations

import ctypes
import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pymongo

__all__ = ["DataDirLocked", "StoreStartError", "DataDirLock", "EmbeddedStore", "store_url_path",
           "connect", "module_db_name", "HOST_DB_NAME"]

HOST_DB_NAME = "insights"
_DB_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class DataDirLocked(RuntimeError):
    """Another daemon holds the data dir."""


class StoreStartError(RuntimeError):
    """nx-27017 did not come up."""


def store_url_path(data_dir) -> Path:
    """:returns: ``<data_dir>/store.url``."""
    return Path(data_dir) / "store.url"


def connect(url: str, **kwargs) -> pymongo.MongoClient:
    """:returns: a client with sensible timeouts."""
    options = {"serverSelectionTimeoutMS": 10000, "connectTimeoutMS": 5000, **kwargs}
    return pymongo.MongoClient(url, **options)


def module_db_name(module_name: str) -> str:
    """:returns: the database name of a module. :raises ValueError: bad module name."""
    if not re.match(r"^[a-z][a-z0-9_]*$", module_name or ""):
        raise ValueError(f"invalid module name {module_name!r}")
    name = f"mod_{module_name}"
    if not _DB_NAME.match(name):
        raise ValueError(f"module name {module_name!r} is too long for a database name")
    return name


class DataDirLock:
    """Exclusive lock file ``<data_dir>/hostd.lock`` so two daemons never share a data dir."""

    def __init__(self, data_dir):
        self._path = Path(data_dir) / "hostd.lock"
        self._fd = None

    def acquire(self) -> None:
        """:raises DataDirLocked: another process holds it."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise DataDirLocked(f"data dir {self._path.parent} is in use by another hostd"
                                f" (pid {holder or '?'})") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def _pdeathsig():
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class EmbeddedStore:
    """Runs the embedded nx-27017 server as a child process under ``<data_dir>/store/``."""

    def __init__(self, data_dir, *, host="127.0.0.1", startup_timeout_s=30.0):
        self._data_dir = Path(data_dir)
        self._dir = self._data_dir / "store"
        self._host = host
        self._timeout = startup_timeout_s
        self._process = None
        self._url = None

    @property
    def url(self):
        return self._url

    @property
    def pid(self):
        return self._process.pid if self._process is not None else None

    def _kill_stale(self) -> None:
        try:
            pid = int((self._dir / "nx.pid").read_text().strip())
            process = psutil.Process(pid)
            if any("nx_27017" in part for part in process.cmdline()):
                process.kill()
                process.wait(5)
        except (OSError, ValueError, psutil.Error):
            pass

    def start(self) -> str:
        """Start the server. :returns: its mongodb:// URL. :raises StoreStartError: it did not come up."""
        (self._dir / "db").mkdir(parents=True, exist_ok=True)
        self._kill_stale()
        for _ in range(3):
            port = _free_port(self._host)
            with open(self._dir / "nx.err", "ab") as errors:  # the child keeps its own copy
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "nx_27017.nx_27017", "--data-dir", str(self._dir / "db"),
                     "--host", self._host, "-p", str(port), "--pid-file", str(self._dir / "nx.pid"),
                     "--log-file", str(self._dir / "nx.log")],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                    start_new_session=True, preexec_fn=_pdeathsig)
            url = f"mongodb://{self._host}:{port}/"
            if self._wait(url):
                self._url = url
                self._write_url(url)
                return url
            self.stop()
        raise StoreStartError(f"nx-27017 did not start: {self._log_tail()}")

    def _wait(self, url: str) -> bool:
        deadline = time.time() + self._timeout
        client = pymongo.MongoClient(url, serverSelectionTimeoutMS=200, connectTimeoutMS=200)
        try:
            while time.time() < deadline:
                if self._process.poll() is not None:
                    return False
                try:
                    client.admin.command("ping")
                    return True
                except pymongo.errors.PyMongoError:
                    time.sleep(0.05)
            return False
        finally:
            client.close()

    def _log_tail(self) -> str:
        text = ""
        for name in ("nx.err", "nx.log"):
            try:
                text += (self._dir / name).read_text(errors="replace")[-2000:]
            except OSError:
                pass
        return text

    def _write_url(self, url: str) -> None:
        path = store_url_path(self._data_dir)
        tmp = path.with_name(".store.url.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(url + "\n")
        os.replace(tmp, path)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL). Idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._url is not None:
            self._url = None
            try:
                store_url_path(self._data_dir).unlink()
            except FileNotFoundError:
                pass

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
