"""A sandbox's self-confinement (:mod:`sandbox.confine`), layer by layer, in both modes.

Each test runs ``tests/confine_attempts.py`` in a real subprocess: it stands in
for hostd (unconfined, holding a secret in its environment), forks a child that
calls ``confine.apply(plan)`` and then tries the forbidden things. Two modes:

* ``root``: the stand-in runs as root; the child drops to an unprivileged uid
  (needs root);
* ``user``: the stand-in runs as an unprivileged user (``nobody`` through
  ``Popen(user=...)`` when the tests run as root, with Debian's
  ``/usr/bin/python3``, since the project's interpreter under ``/root`` cannot
  run as another user); the child keeps that uid in a user namespace of its own.

A control run without any layer shows each attempt succeeds unconfined (so the
checks can fail); "each layer alone" shows the network namespace, Landlock and
seccomp each stop a TCP connect by themselves, so a layer silently off shows up.
The last test runs a real ``hostd serve`` in user mode against the hostile
modules of ``tests/hostile_modules``.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hostd.config import SETTINGS
from hostd.isolation import Isolation
from hostd.paths import HostPaths

from running_hostd import start_daemon, stop_daemon

HERE = Path(__file__).resolve().parent
ATTEMPTS = HERE / "confine_attempts.py"
SYSTEM_PYTHON = "/usr/bin/python3"
UNPRIVILEGED = 65534  # nobody
IS_ROOT = os.geteuid() == 0
DENIED = ("PermissionError", "FileNotFoundError", "OSError", "ProcessLookupError")


DEFAULTS = {setting.key: setting.default for setting in SETTINGS}


def landlock_abi() -> int:
    """The kernel's Landlock ABI (0: none)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return max(int(libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))), 0)


LANDLOCK_ABI = landlock_abi()


def denied(outcome: str) -> bool:
    return outcome.split(":", 1)[0] in DENIED


@dataclass
class Runner:
    """How the stand-in for hostd runs in one mode."""

    mode: str
    python: str
    user: int | None  # Popen(user=...), None: as ourselves
    env: dict
    host_uid: int  # the stand-in's uid: owns hostd's data dir and the module folders
    module_uid: int  # the confined child's uid

    def run(self, plan: dict, attempts: list, secret: str) -> dict:
        """:returns: ``{"enforced": ..., "outcomes": {attempt name + argument: outcome}}``."""
        process = subprocess.run(
            [self.python, str(ATTEMPTS), json.dumps(plan), json.dumps(attempts)],
            env={**self.env, "INSIGHTS_TEST_SECRET": secret}, cwd="/", capture_output=True, text=True,
            timeout=120, user=self.user, group=self.user, extra_groups=[] if self.user is not None else None)
        assert process.returncode == 0, (process.returncode, process.stdout, process.stderr)
        report = json.loads(process.stdout)
        keys = [f"{name} {argument}" for name, argument in attempts]
        return {"enforced": report["enforced"], "outcomes": dict(zip(keys, report["outcomes"]))}


@pytest.fixture(scope="session")
def packages():
    """A folder anyone can read holding landlockpy and pyseccomp (both pure Python)."""
    landlockpy = pytest.importorskip("landlockpy")
    pyseccomp = pytest.importorskip("pyseccomp")
    folder = Path(tempfile.mkdtemp(prefix="insights-confine-pkgs-"))
    os.chmod(folder, 0o755)
    shutil.copytree(Path(landlockpy.__file__).parent, folder / "landlockpy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(pyseccomp.__file__, folder / "pyseccomp.py")
    for path in folder.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    yield folder
    shutil.rmtree(folder)


def _system_python_works() -> str | None:
    """:returns: why Debian's interpreter cannot run as nobody, or None."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} is missing"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import ctypes, json, resource"], capture_output=True,
                           user=UNPRIVILEGED, group=UNPRIVILEGED, extra_groups=[])
    return None if probe.returncode == 0 else f"{SYSTEM_PYTHON} fails as uid {UNPRIVILEGED}: {probe.stderr!r}"


@pytest.fixture(params=["root", "user"])
def runner(request, packages):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(packages), "PYTHONDONTWRITEBYTECODE": "1"}
    if request.param == "root":
        if not IS_ROOT:
            pytest.skip("root mode (uid switch, namespaces without a user namespace) needs root")
        return Runner("root", sys.executable, None, env, 0, UNPRIVILEGED)
    if not IS_ROOT:
        return Runner("user", sys.executable, None, env, os.getuid(), os.getuid())
    reason = _system_python_works()
    if reason:
        pytest.skip(reason)
    return Runner("user", SYSTEM_PYTHON, UNPRIVILEGED, env, UNPRIVILEGED, UNPRIVILEGED)


@dataclass
class Layout:
    """hostd's data dir and two module folders, under a folder anyone can traverse."""

    base: Path
    data: Path = field(init=False)
    modules: Path = field(init=False)

    def __post_init__(self):
        self.data, self.modules = self.base / "data", self.base / "modules"

    @property
    def own_module(self) -> Path:
        return self.modules / "mod_a"

    @property
    def other_module(self) -> Path:
        return self.modules / "mod_b"

    @property
    def own_data(self) -> Path:
        return self.data / "modules" / "mod_a"

    @property
    def own_ipc(self) -> Path:
        return self.data / "ipc" / "mod_a"


@pytest.fixture
def layout(runner):
    base = Path(tempfile.mkdtemp(prefix="insights-confine-", dir="/tmp"))
    os.chmod(base, 0o755)
    found = Layout(base)
    for folder, mode in ((found.data, 0o700), (found.data / "modules", 0o755), (found.data / "ipc", 0o700),
                         (found.own_data, 0o700), (found.own_ipc, 0o700), (found.modules, 0o755),
                         (found.own_module, 0o755), (found.other_module, 0o755)):
        folder.mkdir(exist_ok=True)
        os.chmod(folder, mode)
    for path, text, mode in ((found.data / "store.url", "mongodb://127.0.0.1:1", 0o600),
                             (found.data / "fs.key", "k" * 64, 0o600),
                             (found.own_module / "__init__.py", "VALUE = 1\n", 0o644),
                             (found.other_module / "secret.txt", "mod_b's secret", 0o644)):
        path.write_text(text)
        os.chmod(path, mode)
    if IS_ROOT:  # hostd owns its data and the module folders; the module its own folders
        for path in [base, *base.rglob("*")]:
            os.lchown(path, runner.host_uid, runner.host_uid)
        for folder in (found.own_data, found.own_ipc):
            os.lchown(folder, runner.module_uid, runner.module_uid)
    yield found
    shutil.rmtree(base)


@pytest.fixture
def listener():
    """A TCP port on 127.0.0.1 that accepts connections (into its backlog)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


def make_plan(runner: Runner, layout: Layout, packages: Path, layers: set) -> dict:
    """A plan like hostd's, with only ``layers`` (``isolate``, ``landlock``, ``seccomp``)."""
    plan = {"max_open_files": 64, "address_space_mb": 4096, "max_processes": 16,
            "code": sorted({sys.base_prefix, sys.prefix, str(packages)}) if runner.python == sys.executable
            else [str(packages)],
            "read": [str(layout.own_module)], "write": [str(layout.own_data), str(layout.own_ipc)],
            "workdir": str(layout.own_data)}
    if "isolate" in layers:
        plan.update(isolate=runner.mode, hide=[["/root", "0711"], ["/tmp", "1777"], [str(layout.data), "0755"],
                                               [str(layout.modules), "0755"]])
        if runner.mode == "root":
            plan.update(uid=runner.module_uid, gid=runner.module_uid)
    plan.update(landlock="landlock" in layers, seccomp="seccomp" in layers)
    return plan


def unavailable(enforced: dict) -> dict:
    return {layer: text for layer, text in enforced.items() if text.startswith("unavailable")}


# -- the control: unconfined, every attempt works ------------------------------------

def test_unconfined_every_attempt_works(runner, layout, listener, packages):
    secret = uuid.uuid4().hex
    attempts = [["tcp", listener], ["inet_socket", None], ["write", str(layout.own_module / "new.py")],
                ["read", str(layout.other_module / "secret.txt")], ["read", str(layout.data / "fs.key")],
                ["parent_environ_has", secret], ["read_parent", "status"], ["ptrace_parent", None],
                ["kill_parent", None], ["raise_core", None], ["unshare_user", None]]
    report = runner.run({}, attempts, secret)
    assert report["enforced"] == {"core": "no core dumps", "pdeathsig": "dies with hostd"}, report
    outcomes = report["outcomes"]
    assert outcomes[f"parent_environ_has {secret}"] == "ok: True", outcomes
    failed = {attempt: outcome for attempt, outcome in outcomes.items() if not outcome.startswith("ok")}
    # RLIMIT_CORE soft = hard = 0 is set even by an empty plan: raising it back fails
    assert set(failed) == {"raise_core None"}, failed


# -- each layer alone stops a TCP connect ----------------------------------------------

LAYER_KEYS = {"isolate": "network", "landlock": "landlock", "seccomp": "seccomp"}


@pytest.mark.parametrize("layer", sorted(LAYER_KEYS))
def test_each_layer_alone_stops_tcp(runner, layout, listener, packages, layer):
    if layer == "landlock" and LANDLOCK_ABI < 4:
        pytest.skip(f"Landlock denies TCP from ABI 4; this kernel has ABI {LANDLOCK_ABI}")
    plan = make_plan(runner, layout, packages, {layer})
    report = runner.run(plan, [["tcp", listener], ["read", str(layout.own_module / "__init__.py")]], "s")
    enforced, outcomes = report["enforced"], report["outcomes"]
    assert not unavailable(enforced), enforced
    assert LAYER_KEYS[layer] in enforced, enforced
    assert {key for key in LAYER_KEYS.values() if key in enforced} == {LAYER_KEYS[layer]}, enforced
    assert not outcomes[f"tcp {listener}"].startswith("ok"), outcomes
    assert outcomes[f"read {layout.own_module / '__init__.py'}"] == "ok: 10", outcomes  # its own code


# -- all layers -----------------------------------------------------------------------

def test_fully_confined(runner, layout, listener, packages):
    secret = uuid.uuid4().hex
    own_file, new_code = layout.own_data / "own.txt", layout.own_module / "new.py"
    attempts = [
        ["write", str(own_file)], ["read", str(own_file)], ["unix_bind", str(layout.own_ipc / "x.sock")],
        ["read", str(layout.own_module / "__init__.py")], ["read", "/proc/self/status"], ["getuid", None],
        ["tcp", listener], ["inet_socket", None], ["write", str(new_code)],
        ["listdir", str(layout.other_module)], ["read", str(layout.other_module / "secret.txt")],
        ["read", str(layout.data / "store.url")], ["read", str(layout.data / "fs.key")],
        ["listdir", str(layout.data)], ["parent_environ_has", secret], ["read_parent", "status"],
        ["ptrace_parent", None], ["kill_parent", None], ["raise_core", None], ["fork_many", 40],
        ["unshare_user", None],
    ]
    report = runner.run(make_plan(runner, layout, packages, {"isolate", "landlock", "seccomp"}), attempts, secret)
    enforced, outcomes = report["enforced"], report["outcomes"]
    assert not unavailable(enforced), enforced
    for layer in ("namespaces", "network", "filesystem", "landlock", "seccomp", "core", "open_files",
                  "address_space", "processes", "pdeathsig"):
        assert layer in enforced, (layer, enforced)
    assert ("uid" in enforced) == (runner.mode == "root"), enforced
    # what the module may do
    assert outcomes[f"write {own_file}"] == "ok", outcomes
    assert outcomes[f"read {own_file}"] == "ok: 29", outcomes
    assert outcomes[f"unix_bind {layout.own_ipc / 'x.sock'}"] == "ok", outcomes
    assert outcomes[f"read {layout.own_module / '__init__.py'}"] == "ok: 10", outcomes
    assert outcomes["read /proc/self/status"].startswith("ok"), outcomes
    assert outcomes["getuid None"] == f"ok: {runner.module_uid}", outcomes
    # what it may not
    assert outcomes[f"tcp {listener}"].split(":")[0] in ("OSError", "PermissionError"), outcomes
    assert outcomes["inet_socket None"].startswith("PermissionError"), outcomes  # seccomp: EACCES
    assert outcomes[f"write {new_code}"].split(":")[0] in ("OSError", "PermissionError"), outcomes  # EROFS/EACCES
    assert not new_code.exists()
    for attempt in (f"listdir {layout.other_module}", f"read {layout.other_module / 'secret.txt'}",
                    f"read {layout.data / 'store.url'}", f"read {layout.data / 'fs.key'}",
                    f"parent_environ_has {secret}", "read_parent status", "ptrace_parent None"):
        assert denied(outcomes[attempt]), (attempt, outcomes[attempt])
    # only its own folders of hostd's data dir are there (bound back under an empty tmpfs)
    assert outcomes[f"listdir {layout.data}"] in ("ok: ['modules', 'ipc']", "ok: ['ipc', 'modules']") or denied(
        outcomes[f"listdir {layout.data}"]), outcomes
    if runner.mode == "root" or LANDLOCK_ABI >= 6:  # same uid: only Landlock's signal scope stops it
        assert outcomes["kill_parent None"].startswith("PermissionError"), outcomes
    assert outcomes["raise_core None"].startswith("ValueError"), outcomes
    started = int(outcomes["fork_many 40"].split(": ")[1])
    assert started < 16, outcomes  # RLIMIT_NPROC 16, counted for its uid or its user namespace
    assert outcomes["unshare_user None"].startswith("PermissionError"), outcomes


# -- hostd's side -----------------------------------------------------------------------

def test_user_mode_isolation_prepares_private_folders_and_a_plan(tmp_path):
    data = tmp_path / "data"
    paths = HostPaths(data)
    paths.make()
    modules = tmp_path / "modules"
    (modules / "mod_a").mkdir(parents=True)
    config = {**DEFAULTS, "modules.paths": [str(modules)]}
    isolation = Isolation(paths, config, "mongodb://127.0.0.1:1", mode="user")
    try:
        store_url, plan = isolation.prepare("mod_a", modules / "mod_a", {})
    finally:
        isolation.close()
    assert store_url.startswith("mongodb://%2F") and "store.sock" in store_url
    for folder in (paths.module_data("mod_a"), paths.module_ipc("mod_a")):
        assert folder.stat().st_mode & 0o777 == 0o700
        assert folder.stat().st_uid == os.getuid()
    assert plan["isolate"] == "user" and "uid" not in plan
    assert plan["landlock"] is True and plan["seccomp"] is True
    assert plan["write"] == [str(paths.module_data("mod_a")), str(paths.module_ipc("mod_a"))]
    hidden = [folder for folder, _ in plan["hide"]]
    assert str(data.resolve()) in hidden and str(modules.resolve()) in hidden and "/tmp" in hidden
    root = str(HERE.parent)
    assert root in plan["list"] and root not in plan["code"]  # a checkout's conf and tests are not code
    assert f"{root}/sandbox" in plan["code"]
    for granted in plan["code"]:  # nothing granted holds hostd's data or the modules
        assert not str(data.resolve()).startswith(granted.rstrip("/") + "/"), granted
        assert not str(modules.resolve()).startswith(granted.rstrip("/") + "/"), granted


def test_isolation_setting_rejects_an_unknown_mode(tmp_path):
    config = {**DEFAULTS, "sandbox.isolation": "partial"}
    with pytest.raises(ValueError, match="sandbox.isolation"):
        Isolation.for_config(HostPaths(tmp_path), config, "mongodb://127.0.0.1:1")


@pytest.mark.skipif(LANDLOCK_ABI < 6, reason="user mode relies on Landlock (ABI 6) against same-uid processes")
def test_hostd_in_user_mode_keeps_hostile_modules_in(tmp_path):
    """A real ``hostd serve`` with ``sandbox.isolation = "user"`` (user namespaces even as root)."""
    modules = tmp_path / "modules"
    for name in ("good_a", "peek_files", "steal_store"):
        shutil.copytree(HERE / "hostile_modules" / name, modules / name)
    daemon = start_daemon(tmp_path, modules, {"good_a", "peek_files", "steal_store"}, set(),
                          more='[sandbox]\nisolation = "user"\n')
    try:
        entries = daemon.modules()
        for name in ("peek_files", "steal_store"):
            confinement = entries[name]["confinement"]
            assert not unavailable(confinement), confinement
            assert confinement["namespaces"].startswith("own user"), confinement
            assert {"network", "filesystem", "landlock", "seccomp"} <= set(confinement), confinement
        data, secret = daemon.data_dir, uuid.uuid4().hex
        assert daemon.query("good_a_write_secret", secret=secret) is True
        secret_file = data / "modules" / "good_a" / "fs" / "secret.txt"
        good_a_pid, hostd_pid = entries["good_a"]["pid"], daemon.process.pid
        pwned = data / "modules" / "good_a" / "fs" / "pwned.txt"
        attempts = daemon.query("peek", read=[
            str(secret_file), str(data / "fs.key"), str(data / "store.url"), str(data / "hostd.lock"),
            str(data / "run" / "runtime.json"), f"/proc/{hostd_pid}/environ", f"/proc/{good_a_pid}/environ",
            f"/proc/{hostd_pid}/status"], write=[str(pwned)], listdir=[str(secret_file.parent), str(data / "run")],
            signal0=[good_a_pid, hostd_pid])
        assert len(attempts) == 13, attempts
        reached = {what: outcome for what, outcome in attempts.items()
                   if outcome not in ("PermissionError", "FileNotFoundError", "ProcessLookupError")}
        assert not reached, reached
        assert not pwned.exists()
        assert daemon.query("peek_own") == "my own data"
        url = (data / "store.url").read_text().strip()  # a unix socket: try the default port too
        stolen = daemon.query("steal", url=url, store_ports=[27017],
                              http_port=int(daemon.base.rsplit(":", 1)[1]))
        assert stolen and not {k: v for k, v in stolen.items() if v.startswith("ok")}, stolen
        assert daemon.query("steal_own") == "my own data"  # its own database, through the relay
    finally:
        stop_daemon(daemon)
