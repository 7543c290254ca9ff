"""verbs_per_day in a real sandbox, with the tincan data layer loaded as hostd loads it.

The module reads only ``evt.tincan.*``: fed Open edX's fixture events in one
harness and the xAPI statements Open edX makes of them in another, it must
answer the same.
"""
import json
import shutil
import uuid
from pathlib import Path

import pytest

from sandbox.testing import ModuleHarness

pytestmark = pytest.mark.timeout(240)

MODULE = Path(__file__).resolve().parents[1]
TINCAN = MODULE.parent / "tincan"
ROOT = Path(__file__).resolve().parents[3]
ERB = ROOT.parent / "shared" / "data" / "event-routing-backends"
PLAYED = "https://w3id.org/xapi/video/verbs/played"
PAUSED = "https://w3id.org/xapi/video/verbs/paused"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _play(user: str, time: str, verb: str = "play_video") -> dict:
    return {"event_type": verb, "event_source": "browser", "username": user, "host": "lms.example.org",
            "time": time, "context": {"course_id": "course-v1:o+c+r", "user_id": 7},
            "event": json.dumps({"id": "v1", "currentTime": 3.5})}


def _statement(name: str, verb: str, time: str) -> dict:
    return {"id": str(uuid.uuid4()), "actor": {"objectType": "Agent", "account": {"homePage": "https://x", "name": name}},
            "verb": {"id": verb}, "object": {"id": "https://x/video/1"}, "timestamp": time}


@pytest.fixture
def harness(insights_module):
    # tincan as shipped: actors named by username. One host per test (they start in
    # a fraction of a second), so no two hosts ever run at once in this process.
    return insights_module(MODULE, properties=[TINCAN])


def test_edx_events_are_counted_per_actor_verb_and_day(harness):
    ann = _unique("ann")
    harness.send_events([_play(ann, "2024-03-01T10:00:00+00:00"), _play(ann, "2024-03-01T23:59:59+00:00"),
                         _play(ann, "2024-03-02T00:00:01+00:00"),
                         _play(ann, "2024-03-02T08:00:00+00:00", verb="pause_video")])
    assert harness.query("verbs_per_day", actor=ann) == [
        {"actor": ann, "verb": PLAYED, "day": "2024-03-01", "count": 2},
        {"actor": ann, "verb": PAUSED, "day": "2024-03-02", "count": 1},
        {"actor": ann, "verb": PLAYED, "day": "2024-03-02", "count": 1}]


def test_xapi_statements_count_alike_and_days_are_utc(harness):
    bob = _unique("bob")
    harness.send_events([_statement(bob, PLAYED, "2024-03-01T23:30:00-02:00"),  # 01:30 UTC on the 2nd
                         _statement(bob, PLAYED, "2024-03-02T10:00:00Z")])
    assert harness.query("verbs_per_day", actor=bob) == [
        {"actor": bob, "verb": PLAYED, "day": "2024-03-02", "count": 2}]


def test_counts_add_up_across_batches_and_duplicates_count_once(harness):
    cat = _unique("cat")
    first = _play(cat, "2024-04-01T09:00:00+00:00")
    harness.send_events([first])
    harness.send_events([first, _play(cat, "2024-04-01T09:00:01+00:00")])
    assert harness.query("verbs_per_day", actor=cat, verb=PLAYED)[0]["count"] == 2


def test_unmapped_and_unknown_events_are_not_counted(harness):
    dan = _unique("dan")
    harness.send_events([{"event_type": "seq_goto", "username": dan, "time": "2024-05-01T00:00:00+00:00"},
                         {"event": "cachetest", "username": dan}, {"hello": dan}])
    assert harness.query("verbs_per_day", actor=dan) == []


def test_counts_live_in_one_document_per_actor_verb_and_day(harness):
    eve = _unique("eve")
    harness.send_events([_play(eve, "2024-06-01T12:00:00+00:00")])
    doc = harness.db["verbs_per_day"].find_one({"actor": eve})
    assert doc["_id"] == json.dumps([eve, PLAYED, "2024-06-01"], separators=(",", ":"))
    assert (doc["verb"], doc["day"], doc["count"]) == (PLAYED, "2024-06-01", 1)


def test_the_view_shows_the_counts_escaped(harness):
    name = _unique("<b>fay</b>")
    harness.send_events([_play(name, "2024-07-01T12:00:00+00:00")])
    page = harness.view("verbs_per_day_view", actor=name)
    assert "<b>fay</b>" not in page and "&lt;b&gt;fay&lt;/b&gt;" in page
    assert ">played</td>" in page and "<td>1</td>" in page


# -- the same answers for an edX stream and its xAPI stream -----------------------

def _configured_tincan(folder: Path) -> Path:
    """tincan with the settings of Open edX's fixtures (LMS root URL, one anonymous id for all)."""
    target = folder / "tincan"
    target.mkdir()
    for source in TINCAN.glob("*.py"):
        shutil.copy(source, target / source.name)
    (target / "module.toml").write_text(
        '[module]\ndescription = "tincan as Open edX\'s fixtures are configured"\n'
        '[tincan]\nlms_root_url = "http://localhost:18000"\n'
        '[tincan.actor_names]\n"*" = "32e08e30-f8ae-4ce2-94a8-c2bfe38a70cb"\n', encoding="utf-8")
    return target


def _streams():
    """Fixture pairs as two streams. Open edX gives some statements of different fixtures the
    same id (an LRS would keep one of them): only the first pair of each such group is kept."""
    edx, xapi, seen = [], [], set()
    for path in sorted((ERB / "current").glob("*.json")):
        expected = ERB / "expected-xapi" / path.name
        if not expected.exists():
            continue
        statements = json.loads(expected.read_text(encoding="utf-8"))
        statements = statements if isinstance(statements, list) else [statements]
        ids = {s["id"] for s in statements}
        if ids & seen:
            continue
        seen |= ids
        edx.append(json.loads(path.read_text(encoding="utf-8")))
        xapi.extend(statements)
    return edx, xapi


@pytest.mark.skipif(not (ERB / "current").is_dir(), reason=f"real test data not found at {ERB}")
def test_an_edx_stream_and_its_xapi_stream_give_the_same_answers(tmp_path):
    tincan = _configured_tincan(tmp_path)
    edx, xapi = _streams()
    answers = []
    for index, stream in enumerate((edx, xapi)):
        with ModuleHarness(MODULE, data_dir=tmp_path / f"host-{index}", properties=[tincan]) as h:
            result = h.send_events(stream)
            assert result["accepted"] == len(stream)
            answers.append((h.query("verbs_per_day"), h.view("verbs_per_day_view")))
    (edx_rows, edx_page), (xapi_rows, xapi_page) = answers
    assert edx_rows == xapi_rows
    assert edx_page == xapi_page
    assert sum(row["count"] for row in edx_rows) == len(xapi) > len(edx)  # multi-part problems
    assert len({row["verb"] for row in edx_rows}) >= 15


def test_counts_do_not_move_when_events_are_delivered_again(harness):
    # As after a sandbox crash: the handler gets logged events a second time.
    gus = _unique("gus")
    start = harness.log_head()
    harness.send_events([_play(gus, "2024-08-01T10:00:00+00:00"), _play(gus, "2024-08-01T11:00:00+00:00"),
                         _play(gus, "2024-08-02T10:00:00+00:00", verb="pause_video")])
    before = harness.query("verbs_per_day", actor=gus)
    assert [row["count"] for row in before] == [2, 1]
    assert harness.redeliver(start) >= 3
    assert harness.redeliver(start + 1) >= 2
    assert harness.query("verbs_per_day", actor=gus) == before
