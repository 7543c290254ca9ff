"""sandbox.transport: ZeroMQ contexts whose I/O threads run SCHED_BATCH, one per sandbox CPU."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import zmq

from sandbox.transport import Contexts, batch_policy_allowed, new_context

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policies")
needs_batch = pytest.mark.skipif(hasattr(os, "SCHED_BATCH") and not batch_policy_allowed(),
                                 reason="this machine refuses SCHED_BATCH to the tests (seccomp?)")


def _io_threads() -> dict[int, str]:
    """:returns: ``{tid: name}`` of this process's ZeroMQ I/O threads."""
    found = {}
    for task in Path("/proc/self/task").iterdir():
        name = (task / "comm").read_text().strip()
        if name.startswith("ZMQbg/IO/"):
            found[int(task.name)] = name
    return found


def _start_threads(context: zmq.Context, tmp_path: Path) -> dict[int, str]:
    """Open a socket (a context starts its threads then) and :returns: the I/O threads it added."""
    before = set(_io_threads())
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(f"ipc://{tmp_path}/nobody.sock")
    try:
        deadline = time.time() + 5  # a thread names itself once it runs
        while time.time() < deadline:
            added = {tid: name for tid, name in _io_threads().items() if tid not in before}
            if added:
                return added  # they live as long as the context
            time.sleep(0.01)
        raise AssertionError("the context started no I/O thread")
    finally:
        socket.close(0)


@needs_batch
def test_io_threads_run_batch_and_the_caller_keeps_its_policy(tmp_path):
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
    context = new_context()
    try:
        added = _start_threads(context, tmp_path)
        assert {os.sched_getscheduler(tid) for tid in added} == {os.SCHED_BATCH}
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the trial was undone
        assert os.sched_getaffinity(next(iter(added))) == os.sched_getaffinity(0)
    finally:
        context.destroy(linger=0)


@needs_batch
def test_a_context_for_one_cpu_keeps_its_io_thread_there(tmp_path):
    cpu = max(os.sched_getaffinity(0))
    context = new_context(cpu)
    try:
        added = _start_threads(context, tmp_path)
        assert {frozenset(os.sched_getaffinity(tid)) for tid in added} == {frozenset({cpu})}
        assert os.sched_getscheduler(next(iter(added))) == os.SCHED_BATCH
    finally:
        context.destroy(linger=0)


def test_a_caller_under_another_policy_is_left_alone(tmp_path):
    """libzmq aborts the process when it cannot apply a policy: we only ask from SCHED_OTHER."""
    seen = {}

    def idle_thread():
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # only this thread
        seen["allowed"] = batch_policy_allowed()
        context = new_context()
        try:
            added = _start_threads(context, tmp_path)
            seen["policies"] = {os.sched_getscheduler(tid) for tid in added}  # inherited
        finally:
            context.destroy(linger=0)
    thread = threading.Thread(target=idle_thread)
    thread.start()
    thread.join(30)
    assert seen == {"allowed": False, "policies": {os.SCHED_IDLE}}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_a_cpu_this_process_may_not_use_is_refused():
    with pytest.raises(ValueError, match="may not run on CPU"):
        new_context(max(os.sched_getaffinity(0)) + 1000)


def test_contexts_keep_one_context_per_cpu(tmp_path):
    contexts = Contexts()
    try:
        cpus = sorted(os.sched_getaffinity(0))
        assert contexts.near(None) is contexts.general
        near = contexts.near(cpus[0])
        assert near is contexts.near(cpus[0])
        assert near is not contexts.general
        if len(cpus) > 1:
            assert contexts.near(cpus[1]) not in (near, contexts.general)
        # a CPU this process may not use (libzmq would abort on it): the general context
        assert contexts.near(max(cpus) + 1000) is contexts.general
        socket = near.socket(zmq.DEALER)
        socket.connect(f"ipc://{tmp_path}/nobody.sock")
    finally:
        contexts.destroy(linger=0)
    assert near.closed and contexts.general.closed
    assert socket.closed
