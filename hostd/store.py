"""Storage bootstrap: the data-dir lock, the embedded nx-27017 store, client connections.

The embedded store is `nx-27017 <https://pypi.org/project/nx-27017/>`_ (pinned 0.8.1), a
MongoDB wire-protocol server over SQLite, run as a child process of hostd. hostd's own
storage code keeps to the subset of MongoDB that behaves the same there and on a real
replica set; ``tests/test_store_conformance.py`` checks that subset.

nx-27017 has no authentication, so it listens on no TCP port at all: only on a unix
socket (mode 0600) in a folder only hostd's user may enter (0700). Whoever can open that
socket can read and write every database, so only hostd's own user can; sandboxes reach
their own database through :mod:`hostd.storeproxy`. nx-27017 cannot bind a unix socket
by itself: the child process serves nx's own connection handler under
:func:`asyncio.start_unix_server` (private API of 0.8.1, hence the exact pin).

Layout under the data dir::

    <data_dir>/hostd.lock       exclusive flock held by the running daemon (contains its pid)
    <data_dir>/store.url        mongodb:// URL of the running embedded store (mode 0600)
    <data_dir>/store/           0700
    <data_dir>/store/nx.sock    the store's unix socket (0600); when that path is too long
                                for a unix socket, ``/tmp/insights-store-*/nx.sock`` instead
    <data_dir>/store/db/        one SQLite file per database (``<db>.db``)
    <data_dir>/store/nx.pid     pid of the running nx-27017 server
    <data_dir>/store/nx.log     its log
    <data_dir>/store/nx.stderr  its stdout/stderr of the current run (start-up tracebacks)

Importing this module has no side effects.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import psutil
import pymongo
import pymongo.errors

__all__ = [
    "DataDirLocked",
    "StoreStartError",
    "DataDirLock",
    "EmbeddedStore",
    "store_url_path",
    "unix_store_url",
    "connect",
    "module_db_name",
    "HOST_DB_NAME",
]

#: hostd's own database (event log, cursors, dead letters, ...).
HOST_DB_NAME = "insights"

_MODULE_NAME = re.compile(r"[a-z][a-z0-9_]*")
_DB_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_MODULE_DB_PREFIX = "mod_"

_LOCK_FILE = "hostd.lock"
_URL_FILE = "store.url"
_STORE_DIR = "store"

_SOCKET_NAME = "nx.sock"
_MAX_SOCKET_PATH = 107        # sun_path holds 108 bytes, the last one a NUL
_POLL_S = 0.025               # readiness poll interval (a unix socket connect probe)
_STALE_KILL_TIMEOUT_S = 5.0
_LOG_TAIL_LINES = 40
_NX_VERSION = "0.8.1"         # the version whose private server API the bootstrap uses

# Run by the child interpreter instead of ``python -m nx_27017`` (the package has no
# ``__main__``); argv[1] is hostd's pid, argv[2] the unix socket path, the rest goes to
# nx-27017's own CLI (which keeps its pid file, log file and signal handling).
#
# * nx's CLI only knows TCP (``--host``/``--port``). Its asyncio server is
#   ``nx_27017.server.run_server(host, port, handler)``, looked up at call time, serving
#   each connection with ``nx_27017.server.handle_client(reader, writer, handler)``: the
#   bootstrap replaces run_server by one serving handle_client on the unix socket, so no
#   TCP socket is ever opened. Any other nx-27017 version is refused (exit status 78).
# * umask 077: the socket is created 0600, and so are the SQLite files.
#
# * PR_SET_PDEATHSIG (prctl option 1) makes the kernel SIGKILL the server when the thread
#   that spawned it dies (hostd crash, kill -9). It is set here in the child rather than in
#   a preexec_fn, which is not safe in a multi-threaded parent; the getppid() check closes
#   the window in which hostd could have died before the prctl() call.
# * A root NullHandler turns nx's logging.basicConfig() into a no-op, so it logs only to
#   --log-file (not to stderr as well); stderr keeps uncaught tracebacks.
# * nx logs every generic command (ping, drop, ...) with its arguments at INFO, and
#   asyncio logs a traceback for each open connection when SIGTERM's sys.exit() lands in a
#   client callback: both are filtered out.
_BOOTSTRAP = """\
import asyncio, ctypes, importlib.metadata, logging, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
if os.getppid() != int(sys.argv[1]):
    os._exit(70)
os.umask(0o077)
_version = importlib.metadata.version("nx-27017")
if _version != "%(version)s":
    print(f"nx-27017 {_version} is installed; hostd needs exactly %(version)s", file=sys.stderr)
    sys.exit(78)
import nx_27017.server as nx_server

async def _serve_unix(path, _port, handler):
    async def client(reader, writer):
        await nx_server.handle_client(reader, writer, handler)
    server = await asyncio.start_unix_server(client, path=path)
    os.chmod(path, 0o600)
    logging.getLogger("nx_27017").info("Listening on unix socket %%s", path)
    async with server:
        await server.serve_forever()

nx_server.run_server = _serve_unix
logging.getLogger().addHandler(logging.NullHandler())
logging.getLogger().setLevel(logging.INFO)

def _quiet_commands(record):
    return record.levelno > logging.INFO or not str(record.msg).startswith(
        ("Calling db.command", "NeoSQLite returned"))

def _quiet_shutdown(record):
    exc = record.exc_info[1] if record.exc_info else None
    while exc is not None:
        if isinstance(exc, SystemExit):
            return False
        exc = exc.__context__
    return True

logging.getLogger("nx_27017").addFilter(_quiet_commands)
logging.getLogger("asyncio").addFilter(_quiet_shutdown)
from nx_27017.nx_27017 import main
sys.argv = ["nx_27017", "--host", sys.argv[2], "--port", "0"] + sys.argv[3:]
sys.exit(main())
""" % {"version": _NX_VERSION}


class DataDirLocked(RuntimeError):
    """Another daemon holds the data dir (its ``hostd.lock`` is locked)."""


class StoreStartError(RuntimeError):
    """The embedded nx-27017 server did not come up. The message ends with the tail of its log."""


def store_url_path(data_dir: str | os.PathLike) -> Path:
    """Path of the file holding the URL of the running embedded store.

    :param data_dir: the hostd data dir.
    :returns: ``<data_dir>/store.url``.
    """
    return Path(data_dir) / _URL_FILE


def unix_store_url(path: str | os.PathLike) -> str:
    """The ``mongodb://`` URL of a store served on a unix socket.

    :param path: absolute path of the socket; pymongo wants it to end in ``.sock``.
    :returns: ``mongodb://<percent-encoded path>/?directConnection=true``.
    """
    return "mongodb://" + quote(str(path), safe="") + "/?directConnection=true"


def connect(url: str, **kwargs) -> pymongo.MongoClient:
    """Create a client for the store with sensible timeouts.

    Defaults are ``serverSelectionTimeoutMS=10000`` and ``connectTimeoutMS=5000``; any
    keyword argument is passed on to :class:`pymongo.MongoClient` and overrides them.

    :param url: a ``mongodb://`` URL.
    :param kwargs: further :class:`pymongo.MongoClient` options.
    :returns: a new (lazily connecting) client.
    """
    options = {"serverSelectionTimeoutMS": 10000, "connectTimeoutMS": 5000}
    options.update(kwargs)
    return pymongo.MongoClient(url, **options)


def module_db_name(module_name: str) -> str:
    """Name of a module's own database.

    :param module_name: a module name, matching ``[a-z][a-z0-9_]*``.
    :returns: ``"mod_" + module_name``, which matches ``^[a-z0-9][a-z0-9_-]{0,63}$``.
    :raises ValueError: the module name is not a string, does not match the pattern, or is
        too long for a database name (more than 60 characters).
    """
    if not isinstance(module_name, str) or not _MODULE_NAME.fullmatch(module_name):
        raise ValueError(f"invalid module name {module_name!r}: must match [a-z][a-z0-9_]*")
    name = _MODULE_DB_PREFIX + module_name
    if not _DB_NAME.fullmatch(name):
        raise ValueError(f"module name {module_name!r} is too long "
                         f"(at most {64 - len(_MODULE_DB_PREFIX)} characters)")
    return name


class DataDirLock:
    """Exclusive lock file ``<data_dir>/hostd.lock``, so two daemons never share a data dir.

    Uses ``fcntl.flock(LOCK_EX | LOCK_NB)`` on a descriptor kept open while the lock is held,
    and writes our pid into the file. The lock belongs to the open file description: a
    second :class:`DataDirLock` on the same dir conflicts even inside the same process, and
    the kernel drops the lock when the holder dies. The descriptor is close-on-exec; note
    that a plain ``fork()`` without exec shares (and so keeps holding) the lock.

    :param data_dir: the hostd data dir (created if missing when acquiring).
    """

    def __init__(self, data_dir: str | os.PathLike):
        self._data_dir = Path(data_dir)
        self._path = self._data_dir / _LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock without waiting. A no-op if this object already holds it.

        :raises DataDirLocked: another holder has it; the message names the data dir and
            the pid found in the lock file, if any.
        :raises OSError: the data dir or lock file cannot be created or opened.
        """
        if self._fd is not None:
            return
        self._data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            try:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            except OSError:
                holder = ""
            os.close(fd)
            who = f"pid {holder}" if holder.isdigit() else "unknown pid"
            raise DataDirLocked(f"data dir {self._data_dir} is in use by another hostd "
                                f"({who}; lock file {self._path})") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Release the lock (the file stays, emptied). Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)

    def __enter__(self) -> "DataDirLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _tail(path: Path, lines: int = _LOG_TAIL_LINES, max_bytes: int = 64 * 1024) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def _gone(proc: psutil.Process) -> bool:
    """Whether a process has exited (reaping it if it is our zombie child)."""
    try:
        if proc.status() != psutil.STATUS_ZOMBIE:
            return False
    except psutil.NoSuchProcess:
        return True
    try:
        os.waitpid(proc.pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return True


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class EmbeddedStore:
    """Runs the embedded nx-27017 MongoDB-wire server as a child process under ``<data_dir>/store/``.

    The server listens only on the unix socket ``<data_dir>/store/nx.sock`` (0600, in the
    0700 ``store`` folder), never on TCP: nx-27017 has no authentication, so the socket's
    file permissions are what keep other local users out. When the data dir's path is
    too long for a unix socket (107 bytes), the socket goes into a fresh 0700 folder
    ``/tmp/insights-store-*`` instead, the same one again after a :meth:`stop` when it
    can, so clients keep their URL across a restart.

    The server runs in the foreground in its own session/process group (a terminal Ctrl-C
    does not reach it), with ``PR_SET_PDEATHSIG=SIGKILL`` so it dies with hostd: this is
    tied to the *thread* that calls :meth:`start`, so call it from a thread that lives as
    long as the store (normally the main thread). The caller must hold the
    :class:`DataDirLock` of the data dir: :meth:`start` kills any nx-27017 server left
    running there by a previous daemon.

    :param data_dir: the hostd data dir.
    :param startup_timeout_s: how long :meth:`start` waits in total for the server to answer.
    """

    def __init__(self, data_dir: str | os.PathLike, *, startup_timeout_s: float = 30.0):
        self._data_dir = Path(data_dir)
        self._dir = self._data_dir / _STORE_DIR
        self._startup_timeout_s = float(startup_timeout_s)
        self._process: subprocess.Popen | None = None
        self._url: str | None = None
        self._short_dir: Path | None = None     # the /tmp fallback folder, once chosen
        #: seconds the last successful :meth:`start` took.
        self.startup_seconds: float | None = None

    # -- paths -----------------------------------------------------------------------
    @property
    def db_dir(self) -> Path:
        """:returns: ``<data_dir>/store/db``, which holds one SQLite file per database."""
        return self._dir / "db"

    @property
    def log_file(self) -> Path:
        """:returns: ``<data_dir>/store/nx.log``."""
        return self._dir / "nx.log"

    @property
    def socket_path(self) -> Path:
        """:returns: the server's unix socket (``<data_dir>/store/nx.sock`` unless that path
            is too long, see the class docstring)."""
        path = (self._dir / _SOCKET_NAME).absolute()
        if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
            return path
        if self._short_dir is None:
            self._short_dir = Path(tempfile.mkdtemp(prefix="insights-store-"))
        return self._short_dir / _SOCKET_NAME

    @property
    def _stderr_file(self) -> Path:
        return self._dir / "nx.stderr"

    @property
    def _pid_file(self) -> Path:
        return self._dir / "nx.pid"

    # -- state -----------------------------------------------------------------------
    @property
    def url(self) -> str | None:
        """:returns: the ``mongodb://`` URL of the socket while the store runs, else ``None``."""
        return self._url

    @property
    def pid(self) -> int | None:
        """:returns: the server's pid while it runs, else ``None``."""
        return self._process.pid if self._process is not None else None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> str:
        """Start the server and wait until it answers ``ping``.

        Kills a stale nx-27017 named by ``nx.pid``, launches the server on its unix
        socket, waits for ``ping`` and writes ``<data_dir>/store.url`` (mode 0600). If the
        store already runs, returns its URL.

        :returns: the URL, ``mongodb://<percent-encoded socket path>/?directConnection=true``.
        :raises StoreStartError: the server exited or did not answer within
            ``startup_timeout_s``; the message includes the tail of its log.
        """
        if self._process is not None:
            if self._process.poll() is None:
                return self._url
            self.stop()
        started = time.monotonic()
        deadline = started + self._startup_timeout_s
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self._dir, 0o700)
        self.db_dir.mkdir(mode=0o700, exist_ok=True)
        self._kill_stale()
        sock = self._prepare_socket_dir()
        outcome = self._launch_and_wait(sock, deadline)
        if outcome != "ready":
            reason = {"exited": "exited during start-up",
                      "timeout": f"did not answer within {self._startup_timeout_s:g} s",
                      "foreign": f"answered on {sock} with another server's pid"}[outcome]
            raise StoreStartError(f"embedded store (nx-27017) {reason}; "
                                  f"log {self.log_file}:\n{self._log_tail()}")
        self._url = unix_store_url(sock)
        try:
            self._write_url(self._url)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self._url

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server: SIGTERM to its process group, wait, then SIGKILL; reap it.

        Also removes ``store.url`` and the socket (and its ``/tmp`` folder, if it has one).
        Safe to call several times and when never started.

        :param timeout_s: how long to wait after SIGTERM before SIGKILL.
        """
        process, self._process = self._process, None
        url, self._url = self._url, None
        if process is not None:
            self._terminate(process, timeout_s)
            try:
                if int(self._pid_file.read_text().strip()) == process.pid:
                    self._pid_file.unlink()
            except (OSError, ValueError):
                pass
        if url is not None:
            path = store_url_path(self._data_dir)
            try:
                if path.read_text().strip() == url:
                    path.unlink()
            except OSError:
                pass
        if process is not None:
            _unlink(self.socket_path)
            if self._short_dir is not None:
                try:
                    self._short_dir.rmdir()
                except OSError:
                    pass

    def __enter__(self) -> "EmbeddedStore":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------
    def _prepare_socket_dir(self) -> Path:
        """Make sure the socket's folder exists, is ours and 0700, and holds no old socket.

        :returns: the socket path.
        """
        sock = self.socket_path
        if self._short_dir is not None:
            try:
                os.mkdir(self._short_dir, 0o700)      # again after a stop: same URL
            except FileExistsError:
                info = os.lstat(self._short_dir)
                if not (os.path.isdir(self._short_dir) and not os.path.islink(self._short_dir)
                        and info.st_uid == os.geteuid()):
                    self._short_dir = None            # taken by someone else: a fresh one
                    sock = self.socket_path
            os.chmod(sock.parent, 0o700)
        _unlink(sock)
        return sock

    def _kill_stale(self) -> None:
        """SIGKILL an nx-27017 left by a previous daemon; remove a stale ``nx.pid``.

        nx-27017 refuses to start while its pid file names *any* live process, so the file
        is removed whatever it names.
        """
        try:
            pid = int(self._pid_file.read_text().strip())
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            pid = None
        if pid and pid != os.getpid():
            try:
                proc = psutil.Process(pid)
                if any("nx_27017" in part for part in proc.cmdline()):
                    proc.kill()
                    deadline = time.monotonic() + _STALE_KILL_TIMEOUT_S
                    while not _gone(proc):
                        if time.monotonic() > deadline:
                            raise StoreStartError(f"stale nx-27017 (pid {pid}) of {self._dir} "
                                                  f"does not die")
                        time.sleep(0.01)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                pass
            except psutil.AccessDenied as err:
                raise StoreStartError(f"cannot inspect or kill pid {pid} named by "
                                      f"{self._pid_file}: {err}") from None
        try:
            self._pid_file.unlink()
        except FileNotFoundError:
            pass

    def _launch_and_wait(self, sock: Path, deadline: float) -> str:
        """Launch nx on the unix socket ``sock`` and wait for it.

        :returns: ``"ready"``, ``"exited"``, ``"timeout"`` or ``"foreign"`` (another
            server answered); on anything but ready the process is gone.
        """
        command = [sys.executable, "-c", _BOOTSTRAP, str(os.getpid()), str(sock),
                   "--data-dir", str(self.db_dir),
                   "--pid-file", str(self._pid_file), "--log-file", str(self.log_file)]
        with open(self._stderr_file, "wb") as err:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=err,
                                       stderr=subprocess.STDOUT, cwd=self._dir,
                                       start_new_session=True, close_fds=True)
        self._process = process
        try:
            outcome = self._wait_ready(process, sock, deadline)
        except BaseException:
            self._process = None
            self._terminate(process, 0)
            raise
        if outcome != "ready":
            self._process = None
            self._terminate(process, 0)
        return outcome

    def _wait_ready(self, process: subprocess.Popen, sock: Path, deadline: float) -> str:
        # A cheap connect probe until the socket accepts, then ping with pymongo;
        # serverStatus must report our child's pid, so that no other server is taken for ours.
        while True:
            if process.poll() is not None:
                return "exited"
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    probe.settimeout(0.5)
                    probe.connect(str(sock))
                accepting = True
            except OSError:
                accepting = False
            if accepting:
                remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
                client = pymongo.MongoClient(unix_store_url(sock), connect=False,
                                             serverSelectionTimeoutMS=min(250, remaining_ms),
                                             connectTimeoutMS=250, socketTimeoutMS=5000)
                try:
                    client.admin.command("ping")
                    status = client.admin.command("serverStatus")
                except pymongo.errors.PyMongoError:
                    pass
                else:
                    if status.get("pid") in (None, process.pid):
                        return "ready"
                    return "foreign"
                finally:
                    client.close()
            if time.monotonic() >= deadline:
                return "timeout"
            time.sleep(_POLL_S)

    @staticmethod
    def _terminate(process: subprocess.Popen, timeout_s: float) -> None:
        if process.poll() is None:
            if timeout_s > 0:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    pass
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()

    def _log_tail(self) -> str:
        parts = []
        for path in (self._stderr_file, self.log_file):
            text = _tail(path)
            if text:
                parts.append(f"--- {path.name} ---\n{text}")
        return "\n".join(parts) or "(no log output)"

    def _write_url(self, url: str) -> None:
        path = store_url_path(self._data_dir)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, url.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
