"""Which CPU each sandbox runs on (:mod:`hostd.placement`)."""
from __future__ import annotations

import pytest

from hostd.placement import CpuPlacement

pytestmark = pytest.mark.timeout(30)


def test_modules_are_spread_over_the_cpus_fewest_first():
    placement = CpuPlacement(cpus=[0, 1, 2])
    cpus = [placement.assign(name) for name in ("a", "b", "c", "d", "e")]
    assert cpus == [0, 1, 2, 0, 1]


def test_a_module_keeps_its_cpu_across_restarts():
    placement = CpuPlacement(cpus=[0, 1])
    first = placement.assign("a")
    placement.assign("b")
    assert placement.assign("a") == first
    assert placement.assign("a") == first


def test_a_removed_module_frees_its_place():
    placement = CpuPlacement(cpus=[4, 7])
    assert [placement.assign(n) for n in ("a", "b", "c")] == [4, 7, 4]
    placement.release("a")
    placement.release("never-assigned")  # harmless
    assert placement.assign("d") == 4  # CPU 4 holds one sandbox again, like CPU 7


def test_disabled_placement_pins_nothing():
    placement = CpuPlacement(enabled=False, cpus=[0, 1])
    assert placement.assign("a") is None


def test_default_cpus_are_those_this_process_may_use():
    import os
    placement = CpuPlacement()
    assert placement.assign("a") in os.sched_getaffinity(0)
