"""pytest plugin for module authors (entry point ``insights``).

Fixture ``insights_module``: a factory starting a :class:`~sandbox.testing.ModuleHarness`
for a module folder, stopped at the end of the test::

    def test_hello(insights_module):
        h = insights_module("contrib_modules/hello")
        assert "Hello" in h.view("hello_world")
"""
from __future__ import annotations

import pytest

from .testing import ModuleHarness


@pytest.fixture
def insights_module(tmp_path):
    """:returns: ``start(path, **kwargs) -> ModuleHarness`` (data under the test's tmp_path)."""
    started = []

    def start(path, **kwargs):
        kwargs.setdefault("data_dir", tmp_path / f"insights-{len(started)}")
        harness = ModuleHarness(path, **kwargs).start()
        started.append(harness)
        return harness

    yield start
    for harness in reversed(started):
        harness.stop()
