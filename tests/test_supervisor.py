"""ModuleSupervisor: one module's sandbox (a real subprocess), driven tick by tick."""
from __future__ import annotations

import os
import time

import pytest

from hostd.config import load_config
from hostd.launcher import Launcher
from hostd.paths import HostPaths
from hostd.supervisor import ModuleState, ModuleSupervisor, RestartPolicy

BACKOFF_INITIAL_S = 0.2


@pytest.fixture
def spinning_module(tmp_path):
    """The supervisor of a module whose import never ends (it ignores SIGTERM meanwhile)."""
    folder = tmp_path / "modules" / "spin_start"
    folder.mkdir(parents=True)
    marker = tmp_path / "importing"
    (folder / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\nwhile True:\n    pass\n",
                                        encoding="utf-8")
    paths = HostPaths(tmp_path / "data")
    paths.make()
    config = load_config(None, {"limits.start_timeout_s": 0.5, "supervisor.backoff_initial_s": BACKOFF_INITIAL_S,
                                "supervisor.backoff_max_s": 1.0})
    launcher = Launcher(paths, config, "mongodb://127.0.0.1:9")
    supervisor = ModuleSupervisor("spin_start", folder, config.limits(), launcher, os.urandom(32),
                                  RestartPolicy.from_config(config))
    yield supervisor, marker
    supervisor.stop()


def _wait_importing(supervisor: ModuleSupervisor, marker) -> None:
    """Wait until the sandbox imports the module and its start timeout has passed."""
    deadline = time.time() + 30
    while not marker.exists():
        assert time.time() < deadline, "the sandbox never started importing"
        time.sleep(0.05)
    time.sleep(max(0.0, supervisor.started_at + supervisor.limits["start_timeout_s"] + 0.1 - time.time()))


def test_the_backoff_after_a_start_timeout_counts_from_the_kill(spinning_module):
    """A sandbox that was never ready is SIGKILLed at once, and its restart waits its backoff
    (it used to start again at once, so ``crashloop`` lasted a few milliseconds)."""
    supervisor, marker = spinning_module
    supervisor.start()
    assert supervisor.state is ModuleState.STARTING
    _wait_importing(supervisor, marker)

    pid = supervisor.pid
    supervisor.tick()  # past start_timeout_s: SIGKILL, no grace period
    assert supervisor.state is ModuleState.RESTARTING
    assert supervisor.last_error == "not ready after 0.5 s"
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    killed_at = time.time()

    supervisor.tick()  # at once: still backing off
    assert supervisor.state is ModuleState.RESTARTING
    time.sleep(max(0.0, killed_at + BACKOFF_INITIAL_S + 0.05 - time.time()))
    supervisor.tick()
    assert supervisor.state is ModuleState.STARTING
    assert supervisor.restarts == 1
