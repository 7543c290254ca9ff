"""Run :func:`sandbox.confine.apply` in a child process, then try forbidden things.

``python confine_attempts.py PLAN_JSON ATTEMPTS_JSON`` (used by
``tests/test_confine.py``): this process (the stand-in for hostd, unconfined)
forks; the child confines itself with the plan (``parent_pid`` = this process),
runs each ``[name, argument]`` attempt and sends back
``{"enforced": ..., "outcomes": [...]}``, printed here as JSON. Each outcome is
``"ok"``, ``"ok: <result>"`` or ``"<exception type>: <message>"``.

``sandbox/confine.py`` is loaded by its path, so that this runs under an
interpreter without the project's dependencies (Debian's ``/usr/bin/python3`` as
an unprivileged user); everything an attempt uses is imported before the child
confines itself.
"""
import ctypes
import importlib.util
import json
import os
import resource
import socket
import sys
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
_spec = importlib.util.spec_from_file_location(
    "confine_under_test", Path(__file__).resolve().parents[1] / "sandbox" / "confine.py")
confine = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(confine)

PTRACE_SEIZE = 0x4206
CLONE_NEWUSER = 0x10000000


def _check(result: int) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def _read(path):
    with open(path, "rb") as handle:
        return len(handle.read())


def _write(path):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("written by a confined process")


def _tcp(port):
    with socket.create_connection(("127.0.0.1", port), timeout=3):
        return "connected"


def _environ_has(secret):
    with open(f"/proc/{os.getppid()}/environ", "rb") as handle:
        return secret.encode() in handle.read()


def _fork_many(limit):
    """Fork up to ``limit`` children that wait on a pipe; :returns: how many started."""
    read_end, write_end = os.pipe()
    children = []
    try:
        for _ in range(limit):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                os.close(write_end)
                os.read(read_end, 1)
                os._exit(0)
            children.append(pid)
    finally:
        os.close(write_end)
        for pid in children:
            os.waitpid(pid, 0)
    return len(children)


def _unix_bind(path):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(path)
    os.unlink(path)


ATTEMPTS = {
    "tcp": _tcp,
    "inet_socket": lambda _: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close(),
    "read": _read,
    "write": _write,
    "listdir": os.listdir,
    "exists": os.path.exists,
    "parent_environ_has": _environ_has,
    "read_parent": lambda name: _read(f"/proc/{os.getppid()}/{name}"),
    "ptrace_parent": lambda _: _check(_libc.ptrace(PTRACE_SEIZE, os.getppid(), None, None)),
    "unshare_user": lambda _: _check(_libc.unshare(CLONE_NEWUSER)),
    "raise_core": lambda _: resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,) * 2),
    "kill_parent": lambda _: os.kill(os.getppid(), 0),
    "fork_many": _fork_many,
    "unix_bind": _unix_bind,
    "getuid": lambda _: os.getuid(),
}


def _outcome(name, argument) -> str:
    try:
        result = ATTEMPTS[name](argument)
    except Exception as err:  # the test wants the exact failure
        return f"{type(err).__name__}: {err}"
    return "ok" if result is None else f"ok: {result!r}"


def main() -> int:
    plan, attempts = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    plan["parent_pid"] = os.getpid()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        status = 1
        try:
            enforced = confine.apply(plan)
            report = {"enforced": enforced, "outcomes": [_outcome(name, arg) for name, arg in attempts]}
            with os.fdopen(write_end, "w") as out:
                json.dump(report, out)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        text = reader.read()
    _, raw = os.waitpid(pid, 0)
    if not text:
        print(f"confined child wrote nothing (wait status {raw})", file=sys.stderr)
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
