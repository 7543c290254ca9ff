"""The event_count module, run in a real sandbox by the module harness.

One sandbox serves the whole file, so each test uses its own user names and
compares counts with what they were before it sent events.
"""
import uuid
from pathlib import Path

import pytest

from sandbox.errors import BadParameter, ModuleRaised
from sandbox.testing import ModuleHarness

pytestmark = pytest.mark.timeout(120)

MODULE = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def harness():
    with ModuleHarness(MODULE) as h:
        yield h


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _event(**fields) -> dict:
    return {"id": _unique("evt"), "event_type": "play_video", **fields}


# -- counts -------------------------------------------------------------------

def test_counts_start_at_zero_for_unknown_users(harness):
    assert harness.query("user_event_count", user=_unique("nobody")) == 0
    assert isinstance(harness.query("event_count"), int)
    assert isinstance(harness.query("user_count"), int)


def test_events_are_counted_globally_and_per_user(harness):
    bob, alice = _unique("bob"), _unique("alice")
    events_before = harness.query("event_count")
    users_before = harness.query("user_count")
    harness.send_events([_event(username=bob), _event(username=bob), _event(user=alice),
                         _event(username=bob), _event(anonymous=True)])
    assert harness.query("event_count") == events_before + 5
    assert harness.query("user_count") == users_before + 2
    assert harness.query("user_event_count", user=bob) == 3
    assert harness.query("user_event_count", user=alice) == 1


def test_counts_add_up_across_batches(harness):
    carol = _unique("carol")
    users_before = harness.query("user_count")
    harness.send_events([_event(username=carol)])
    harness.send_events([_event(username=carol), _event(username=carol)])
    assert harness.query("user_event_count", user=carol) == 3
    assert harness.query("user_count") == users_before + 1


def test_duplicate_events_are_not_counted_twice(harness):
    dave = _unique("dave")
    event = _event(username=dave)
    harness.send_events([event])
    result = harness.send_events([event])
    assert result["duplicates"] == 1
    assert harness.query("user_event_count", user=dave) == 1


def test_counts_live_in_the_module_database(harness):
    erin = _unique("erin")
    harness.send_events([_event(username=erin), _event(username=erin)])
    doc = harness.db["counts"].find_one({"_id": f"user|{erin}"})
    assert doc["count"] == 2
    assert doc["kind"] == "user"
    assert harness.db["counts"].find_one({"_id": "global"})["count"] == harness.query("event_count")


def test_user_event_count_without_user_names_the_parameter(harness):
    with pytest.raises(BadParameter) as excinfo:
        harness.query("user_event_count")
    assert excinfo.value.param == "user"


# -- views ----------------------------------------------------------------------

def test_views_show_the_counts_through_queries(harness):
    harness.send_events([_event(username=_unique("frank"))])
    assert harness.view("user_count_view") == f"<html>Users: {harness.query('user_count')}</html>"
    assert harness.view("event_count_view") == f"<html>Events: {harness.query('event_count')}</html>"


# -- names ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["three_name", "edx_three_name", "edx.three_name"])
def test_the_query_answers_to_its_three_names(harness, name):
    assert harness.query(name) == "I have three names"


def test_check_three_name_calls_the_aliases_through_query(harness):
    assert harness.query("check_three_name") == "Works"


# -- cache ----------------------------------------------------------------------

def test_cachetest_events_set_the_cache(harness):
    key = _unique("key")
    assert harness.query("cache_get", key=key) is None
    harness.send_events([{"event": "cachetest", "key": key, "value": "stored", "timeout": 60}])
    assert harness.query("cache_get", key=key) == "stored"


def test_cached_values_expire(harness):
    key = _unique("short")
    harness.send_events([{"event": "cachetest", "key": key, "value": 42, "timeout": 0}])
    assert harness.query("cache_get", key=key) is None


def test_a_malformed_cachetest_event_is_skipped(harness):
    bad, good = _unique("bad"), _unique("good")
    harness.send_events([{"event": "cachetest", "key": bad, "timeout": 60},
                         {"event": "cachetest", "key": good, "value": [1, 2], "timeout": 60}])
    assert harness.query("cache_get", key=bad) is None
    assert harness.query("cache_get", key=good) == [1, 2]


# -- file store -----------------------------------------------------------------

def test_pyfstest_events_create_and_delete_files(harness):
    name = _unique("file") + ".txt"
    assert harness.query("readfile", filename=name) is None
    harness.send_events([{"event": "pyfstest", "create": name, "contents": "hello, file"}])
    assert harness.query("readfile", filename=name) == "hello, file"
    assert (harness.fs_root / name).read_text(encoding="utf-8") == "hello, file"
    harness.send_events([{"event": "pyfstest", "delete": name}])
    assert harness.query("readfile", filename=name) is None
    assert not (harness.fs_root / name).exists()


def test_files_outside_the_store_are_refused(harness):
    harness.send_events([{"event": "pyfstest", "create": "../escaped.txt", "contents": "x"}])
    assert not (harness.fs_root.parent / "escaped.txt").exists()
    with pytest.raises(BadParameter) as excinfo:
        harness.query("readfile", filename="../escaped.txt")
    assert excinfo.value.param == "filename"


def test_a_module_error_is_reported_as_module_raised(harness):
    # readfile of a folder: the module's own code fails, and the caller is told so.
    folder = _unique("dir")
    harness.send_events([{"event": "pyfstest", "create": f"{folder}/inner.txt", "contents": "x"}])
    with pytest.raises(ModuleRaised):
        harness.query("readfile", filename=folder)


# -- at-least-once delivery -------------------------------------------------------

def test_counts_do_not_move_when_events_are_delivered_again(harness):
    # As after a sandbox crash: the handler gets logged events a second time.
    gina, hank = _unique("gina"), _unique("hank")
    start = harness.log_head()
    harness.send_events([_event(username=gina), _event(username=gina), _event(user=hank), _event(anonymous=True)])
    answers = (harness.query("event_count"), harness.query("user_count"))
    assert harness.redeliver(start) >= 4  # log positions need not be dense
    assert harness.redeliver(start + 2) >= 2
    assert (harness.query("event_count"), harness.query("user_count")) == answers
    assert harness.query("user_event_count", user=gina) == 2
    assert harness.query("user_event_count", user=hank) == 1
