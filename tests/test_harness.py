"""The module-author harness: two hosts in one process, the pytest fixture, errors."""
from pathlib import Path

import pytest

from sandbox.errors import BadParameter, ModuleLoadError
from sandbox.testing import ModuleHarness

pytestmark = pytest.mark.timeout(120)

CONTRIB = Path(__file__).resolve().parents[1] / "contrib_modules"


def test_two_hosts_live_side_by_side_in_one_process(tmp_path):
    with ModuleHarness(CONTRIB / "hello", data_dir=tmp_path / "a") as first:
        with ModuleHarness(CONTRIB / "event_count", data_dir=tmp_path / "b") as second:
            second.send_events([{"username": "ann", "n": 1}])
            assert second.query("user_event_count", user="ann") == 1
            assert first.view("hello_user", user="ann") == "<html>Hello ann</html>"
        assert first.view("hello_world") == "<html>Hello world!</html>"


def test_the_pytest_fixture_starts_and_stops_modules(insights_module):
    hello = insights_module(CONTRIB / "hello")
    counter = insights_module(CONTRIB / "event_count")
    counter.send_events([{"username": "bo", "n": 2}])
    assert counter.query("event_count") == 1
    assert "Hello" in hello.view("hello_world")
    with pytest.raises(BadParameter, match="user"):
        hello.view("hello_user")


def test_a_module_that_fails_to_load_is_a_clear_error(tmp_path):
    broken = tmp_path / "modules" / "broken"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise RuntimeError('no-good-marker')\n")
    with pytest.raises(ModuleLoadError, match="no-good-marker"):
        ModuleHarness(broken, data_dir=tmp_path / "data").start()
