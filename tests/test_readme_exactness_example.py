"""The README's example of a handler exact under at-least-once delivery, run as written."""
import pytest

from sandbox.testing import ModuleHarness
from test_readme_examples import example_module

pytestmark = pytest.mark.timeout(120)


def _play(user: str, n: int) -> dict:
    return {"id": f"{user}-{n}", "event_type": "play_video", "username": user}


def test_the_example_counts_each_event_once_when_it_is_delivered_again(tmp_path):
    module = tmp_path / "modules" / "plays"
    module.mkdir(parents=True)
    (module / "__init__.py").write_text(example_module("exactly-once"), encoding="utf-8")
    with ModuleHarness(module, data_dir=tmp_path / "data") as harness:
        harness.send_events([_play("bob", n) for n in range(3)] + [_play("ann", 0)])
        assert harness.query("plays", user="bob") == 3
        assert harness.redeliver(0) >= 4
        assert harness.redeliver(2) >= 2
        assert (harness.query("plays", user="bob"), harness.query("plays", user="ann")) == (3, 1)
