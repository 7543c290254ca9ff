"""Running a whole ``hostd serve`` as an unprivileged user, for tests that run as root.

:func:`account` gives, once per test session, the ``insights-test`` system user
(created with ``useradd`` when missing) and a virtualenv that user can run: the
default interpreter lives under ``/root`` (0700), so the venv is made from
``/usr/bin/python3`` in ``/tmp/insights-venv-<hash>`` (0755), with this
project's dependencies installed from ``setup.py`` (its ``install_requires``)
and the checkout itself on ``PYTHONPATH``, so the code under test is the
checkout's. The venv is named after a hash of ``setup.py`` and that
interpreter's version: it is built once and reused until either changes
(builds are serialized by a lock file, so parallel sessions share one).

Anything missing (not root, no ``/usr/bin/python3`` or its ``venv`` module, a
failed install, a checkout the user cannot read) makes :func:`account` call
:func:`pytest.skip` with the reason, in every test that asks for it.
"""
from __future__ import annotations

import ast
import fcntl
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

USER_NAME = "insights-test"
SYSTEM_PYTHON = "/usr/bin/python3"
CHECKOUT = Path(__file__).resolve().parents[1]
_VENV_PREFIX = "/tmp/insights-venv-"
_BUILD_TIMEOUT_S = 1200
_DONE_MARK = ".insights-complete"


@dataclass(frozen=True)
class Account:
    """An unprivileged user and the interpreter it runs hostd with."""

    name: str
    uid: int
    gid: int
    #: the venv's interpreter (made from ``/usr/bin/python3``)
    python: str

    def env(self, home: Path) -> dict:
        """:returns: the environment of a process of this user: the checkout on
            ``PYTHONPATH``, ``home`` as ``HOME``, the machine's ``OPENBLAS_*`` kept."""
        env = {"PATH": f"{Path(self.python).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
               "USER": self.name, "LOGNAME": self.name, "LANG": "C.UTF-8", "PYTHONPATH": str(CHECKOUT)}
        env.update({k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")})
        return env

    def popen_kwargs(self, home: Path) -> dict:
        """:returns: keyword arguments for :class:`subprocess.Popen` running a command as
            this user (no supplementary groups), with :meth:`env` and ``home`` as cwd."""
        return {"user": self.uid, "group": self.gid, "extra_groups": [], "env": self.env(home), "cwd": home}

    def own(self, path: Path) -> None:
        """Give ``path`` and everything under it to this user."""
        for root, dirs, files in os.walk(path):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.lchown(name, self.uid, self.gid)

    def private_dir(self, prefix: str) -> Path:
        """:returns: a fresh folder under ``/tmp`` owned by this user (0700): whatever hostd
            run by this user needs to read or write goes in there."""
        path = Path(tempfile.mkdtemp(prefix=prefix))
        os.chown(path, self.uid, self.gid)
        return path


_found: dict = {}  # filled on first use: {"account": Account} or {"skip": reason}


def account() -> Account:
    """The unprivileged account, prepared once per session.

    :returns: the :class:`Account`.
    :raises pytest.skip.Exception: it cannot exist here; the reason says why.
    """
    if not _found:
        try:
            _found["account"] = _prepare()
        except _Unavailable as why:
            _found["skip"] = str(why)
    if "skip" in _found:
        pytest.skip(_found["skip"])
    return _found["account"]


class _Unavailable(Exception):
    """Why hostd cannot run as an unprivileged user in this session."""


def _prepare() -> Account:
    if os.geteuid() != 0:
        raise _Unavailable("running hostd as another (unprivileged) user needs the tests to run as root")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        raise _Unavailable(f"{SYSTEM_PYTHON} is missing: no interpreter an unprivileged user can run")
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import venv, ensurepip"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise _Unavailable(f"{SYSTEM_PYTHON} has no venv/ensurepip (apt install python3-venv): "
                           f"{probe.stderr.strip()[-300:]}")
    user = _user()
    python = _venv()
    check = subprocess.run([python, "-c", "import hostd.cli, sandbox.runtime, numpy, zmq, nx_27017"],
                           user=user.pw_uid, group=user.pw_gid, extra_groups=[], cwd="/",
                           env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(CHECKOUT), "HOME": "/"},
                           capture_output=True, text=True, timeout=120)
    if check.returncode != 0:
        raise _Unavailable(f"user {USER_NAME} cannot import the project from {CHECKOUT} with {python} "
                           f"(is the checkout readable by others?): {check.stderr.strip()[-500:]}")
    return Account(USER_NAME, user.pw_uid, user.pw_gid, python)


def _user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER_NAME)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    made = subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                           "--user-group", USER_NAME], capture_output=True, text=True)
    try:
        return pwd.getpwnam(USER_NAME)
    except KeyError:
        raise _Unavailable(f"cannot create the system user {USER_NAME}: {made.stderr.strip()}") from None


def requirements() -> list[str]:
    """:returns: the ``install_requires`` of the checkout's ``setup.py`` (read, not run)."""
    tree = ast.parse((CHECKOUT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            for keyword in node.keywords:
                if keyword.arg == "install_requires":
                    return list(ast.literal_eval(keyword.value))
    raise _Unavailable(f"no install_requires list in {CHECKOUT / 'setup.py'}")


def _venv() -> str:
    """Build (or reuse) the venv. :returns: its interpreter."""
    version = subprocess.run([SYSTEM_PYTHON, "-VV"], capture_output=True, text=True).stdout
    key = hashlib.sha256((CHECKOUT / "setup.py").read_bytes() + version.encode()).hexdigest()[:16]
    venv = Path(_VENV_PREFIX + key)
    python = venv / "bin" / "python"
    with open(f"{venv}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others then reuse it
        if venv.exists():
            info = venv.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
                raise _Unavailable(f"{venv} exists but is not a root-owned folder only root may write")
            if (venv / _DONE_MARK).exists():
                return str(python)
            shutil.rmtree(venv)  # a build that did not finish
        try:
            subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True, capture_output=True,
                           text=True, timeout=_BUILD_TIMEOUT_S)
            os.chmod(venv, 0o755)
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                            *requirements()], check=True, capture_output=True, text=True,
                           timeout=_BUILD_TIMEOUT_S, cwd="/")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
            shutil.rmtree(venv, ignore_errors=True)
            output = (getattr(err, "stderr", None) or "") + (getattr(err, "stdout", None) or "")
            raise _Unavailable(f"cannot build a venv from {SYSTEM_PYTHON} in {venv}: {err}: "
                               f"{str(output).strip()[-800:]}") from None
        (venv / _DONE_MARK).write_text("built for tests/unprivileged.py\n")
    return str(python)
