"""Hostile: tries to trace hostd, read its environment, make a user namespace. Not a module to deploy.

The ptrace and unshare attempts run in a forked child, which reports through a
pipe and exits: ``unshare(CLONE_NEWUSER)`` needs a single-threaded caller (the
sandbox has ZeroMQ's threads), and a tracer that exits detaches at once.
``PTRACE_SEIZE`` is checked exactly like ``PTRACE_ATTACH`` but does not stop
hostd, so a success here harms nothing.
"""
import ctypes
import errno
import os

from sandbox import query

PTRACE_SEIZE = 0x4206
CLONE_NEWUSER = 0x10000000


def _in_child(action) -> str:
    """Run ``action`` (a libc call returning 0 on success) in a forked child.
    :returns: ``"ok"`` or the errno's name."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            result = "ok" if action(libc) == 0 else errno.errorcode.get(ctypes.get_errno(), "error")
            os.write(write_end, result.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        return os.read(read_end, 64).decode() or "child died"
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)


def _outcome(action):
    try:
        return f"ok: {action()!r}"[:200]
    except Exception as err:  # the test wants the exact failure
        return type(err).__name__


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


@query()
def spy_hostd_status():
    return "hostile"


@query()
def spy(hostd_pid: int):
    """:returns: ``{attempt: outcome}``: ``"ok"``/``"ok: ..."`` when it worked, else the
    errno name (ptrace) or exception type name (reading)."""
    return {
        "ptrace hostd": _in_child(lambda libc: libc.ptrace(PTRACE_SEIZE, hostd_pid, None, None)),
        "read hostd's environ": _outcome(lambda: _read(f"/proc/{hostd_pid}/environ")),
    }


@query()
def make_user_namespace():
    """:returns: ``"ok"`` if ``unshare(CLONE_NEWUSER)`` worked, else the errno name."""
    return _in_child(lambda libc: libc.unshare(CLONE_NEWUSER))
