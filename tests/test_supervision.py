"""Supervision as one state machine, driven tick by tick over two real sandboxes.

One module spins at import (and ignores SIGTERM), the other crashes at import.
The spinning one must be SIGKILLed at its start timeout without a grace period,
and that must not hold up the crashing one, which restarts on its own backoff
schedule all the while.
"""
from __future__ import annotations

import os
import time

import pytest

from hostd.config import load_config
from hostd.launcher import Launcher
from hostd.modules import ModuleSet
from hostd.paths import HostPaths
from hostd.supervisor import TRANSITIONS, ModuleState, ModuleSupervisor, Ready, RestartPolicy

BACKOFF_S = 0.2
BACKOFF_MAX_S = 0.4
START_TIMEOUT_S = 3.0

SPINNER = """
import signal, sys
signal.signal(signal.SIGTERM, lambda *a: open({term!r}, "w").close())
open({importing!r}, "w").close()
while True:
    pass
"""
CRASHER = "import os\nos._exit(7)\n"


@pytest.fixture
def two_modules(tmp_path):
    modules = tmp_path / "modules"
    term, importing = tmp_path / "spinner-got-sigterm", tmp_path / "spinner-importing"
    for name, code in (("spinner", SPINNER.format(term=str(term), importing=str(importing))),
                       ("crasher", CRASHER)):
        (modules / name).mkdir(parents=True)
        (modules / name / "__init__.py").write_text(code, encoding="utf-8")
    paths = HostPaths(tmp_path / "data")
    paths.make()
    config = load_config(None, {"limits.start_timeout_s": START_TIMEOUT_S,
                                "supervisor.backoff_initial_s": BACKOFF_S,
                                "supervisor.backoff_max_s": BACKOFF_MAX_S,
                                "supervisor.crashloop_restarts": 3, "sandbox.prewarm": False})
    launcher = Launcher(paths, config, "mongodb://127.0.0.1:9")
    policy = RestartPolicy.from_config(config)
    supervisors = {}

    def make(name, folder, error):
        supervisors[name] = ModuleSupervisor(name, folder, config.limits(), launcher, os.urandom(32), policy)
        return supervisors[name]

    module_set = ModuleSet(make, paths.table_file)
    yield module_set, supervisors, modules, term, importing
    module_set.stop(grace_s=0.5)


def test_a_spinning_import_is_killed_at_once_while_a_crashing_module_keeps_its_backoff(two_modules):
    from hostd.catalog import LayerDescriber
    from hostd.discovery import discover
    module_set, supervisors, modules, term, importing = two_modules
    module_set.apply(discover([modules], LayerDescriber(probe=None)))  # no properties.py: nothing to probe
    spinner, crasher = supervisors["spinner"], supervisors["crasher"]
    spinner_process = spinner.sandbox.process

    # Drive both tick by tick, noting every state the crasher enters and when.
    crasher_states, spinner_states = [(time.time(), crasher.state)], [(time.time(), spinner.state)]
    deadline = time.time() + 30
    def crasher_deaths():
        return [t for t, state in crasher_states if state in (ModuleState.RESTARTING, ModuleState.CRASHLOOP)]

    while spinner.restarts == 0 or len(crasher_deaths()) < 3:
        assert time.time() < deadline, f"not seen in time: {spinner.record()}, {crasher_states}"
        module_set.tick()
        for supervisor, states in ((crasher, crasher_states), (spinner, spinner_states)):
            if supervisor.state is not states[-1][1]:
                states.append((time.time(), supervisor.state))
        time.sleep(0.01)

    # The spinner: killed for its start timeout, with SIGKILL and no SIGTERM first.
    assert importing.exists()
    assert spinner.restarts >= 1
    assert spinner.last_error == f"not ready after {START_TIMEOUT_S:g} s"
    assert spinner_process.returncode == -9
    assert not term.exists(), "a sandbox that never reported ready was sent SIGTERM"

    # The crasher: died and restarted several times while the spinner was starting, each
    # restart no sooner than its backoff after the death before it.
    deaths = crasher_deaths()
    starts = [t for t, state in crasher_states[1:] if state is ModuleState.STARTING]
    spinner_killed = next(t for t, state in spinner_states if state is ModuleState.RESTARTING)
    assert len(starts) >= 2 and starts[0] < spinner_killed, (crasher_states, spinner_states)
    for number, (died, started) in enumerate(zip(deaths, starts), start=1):
        delay = min(BACKOFF_S * 2 ** (number - 1), BACKOFF_MAX_S)
        assert started - died >= delay * 0.9, (number, crasher_states)
    assert ModuleState.CRASHLOOP in {state for _, state in crasher_states}
    assert crasher.last_error == "sandbox process exited with status 7"


def test_transitions_outside_the_table_are_refused(tmp_path):
    """Every state change goes through one table; a report from a stale sandbox changes nothing."""
    paths = HostPaths(tmp_path / "data")
    paths.make()
    config = load_config(None, {})
    supervisor = ModuleSupervisor("m", tmp_path, config.limits(), Launcher(paths, config, "mongodb://x"),
                                  os.urandom(32))
    assert ModuleState.RUNNING not in TRANSITIONS[ModuleState.STOPPED]
    with pytest.raises(RuntimeError, match="stopped -> running"):
        supervisor._enter(ModuleState.RUNNING)
    supervisor.signal(Ready(pid=12345, endpoints=[]))
    supervisor.tick()
    assert supervisor.state is ModuleState.STOPPED
    assert str(ModuleState.CRASHLOOP) == "crashloop"
