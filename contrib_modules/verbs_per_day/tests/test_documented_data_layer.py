"""The worked example of docs/data_layer.md runs: its Moodle data layer, taken from the page,
feeds ``tincan.*`` and so verbs_per_day, next to Open edX events."""
import re
from pathlib import Path

import pytest

from sandbox.events import Event
from sandbox.properties import build_registry

pytestmark = pytest.mark.timeout(240)

MODULE = Path(__file__).resolve().parents[1]
TINCAN = MODULE.parent / "tincan"
ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "data_layer.md"
COMPLETED = "http://adlnet.gov/expapi/verbs/completed"
VIEWED = "http://id.tincanapi.com/verb/viewed"
ROW = {"eventname": "\\mod_quiz\\event\\attempt_submitted", "userid": 42, "courseid": 2,
       "contextinstanceid": 17, "timecreated": 1717236000}


@pytest.fixture
def moodle_layer(tmp_path):
    """``moodle_xapi/`` as the page shows it."""
    match = re.search(r"<!-- example:moodle_xapi/properties\.py -->\n```python\n(.*?)```",
                      DOC.read_text(encoding="utf-8"), re.S)
    assert match, f"{DOC} no longer shows the moodle_xapi example"
    folder = tmp_path / "moodle_xapi"
    folder.mkdir()
    (folder / "__init__.py").write_text('"""moodle_xapi: a data layer only (see properties.py)."""\n',
                                        encoding="utf-8")
    (folder / "properties.py").write_text(match.group(1), encoding="utf-8")
    return folder


def test_the_example_extends_tincan_to_moodle(moodle_layer):
    registry = build_registry({"tincan": TINCAN / "properties.py", "moodle_xapi": moodle_layer / "properties.py"},
                              entry_points=False)
    evt = Event(ROW, {"id": "row-1"}, properties=registry)
    assert registry.sources_of(evt) == ["moodle"]
    assert evt.tincan.verb["id"] == COMPLETED
    assert evt.tincan.object["id"] == "https://moodle.example.org/mod/quiz/view.php?id=17"
    assert evt.tincan.actor["account"]["name"] == "42"
    assert evt.tincan.timestamp == "2024-06-01T10:00:00+00:00"
    guest = Event({**ROW, "userid": 0}, {"id": "row-2"}, properties=registry)
    assert guest.tincan.statements == [] and guest.tincan.statement is None
    other = Event({**ROW, "eventname": "\\core\\event\\user_loggedin"}, {"id": "row-3"}, properties=registry)
    assert other.tincan.verb is None
    edx = Event({"event_type": "play_video", "username": "ann", "time": "2024-06-01T09:00:00+00:00",
                 "event": "{\"id\": \"v\"}", "context": {"course_id": "course-v1:o+c+r"}},
                {"id": "edx-1"}, properties=registry)
    assert registry.sources_of(edx) == ["edx"] and edx.tincan.verb["id"].endswith("/played")


def test_verbs_per_day_counts_moodle_and_edx_alike(insights_module, moodle_layer):
    harness = insights_module(MODULE, properties=[TINCAN, moodle_layer])
    harness.send_events([ROW, {**ROW, "eventname": "\\core\\event\\course_viewed", "timecreated": 1717236060},
                         {**ROW, "userid": 0},
                         {"event_type": "play_video", "username": "42", "event_source": "browser",
                          "time": "2024-06-01T09:00:00+00:00", "event": "{\"id\": \"v\"}",
                          "context": {"course_id": "course-v1:o+c+r"}}])
    assert harness.query("verbs_per_day", actor="42") == [
        {"actor": "42", "verb": COMPLETED, "day": "2024-06-01", "count": 1},
        {"actor": "42", "verb": VIEWED, "day": "2024-06-01", "count": 1},
        {"actor": "42", "verb": "https://w3id.org/xapi/video/verbs/played", "day": "2024-06-01", "count": 1}]
