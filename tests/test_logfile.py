"""Unit tests of :mod:`hostd.logfile` on real edX tracking logs and synthetic lines.

The real logs live in ``../shared/data`` beside the repository (see its
``SOURCES.md``); tests that need them skip when that folder is absent.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from hostd.logfile import LogEvent, Quarantined, parse_line, read_events, read_quarantine

pytestmark = pytest.mark.timeout(60)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TRACKING_LOG = DATA / "event-routing-backends" / "tracking.log"
PIPELINE = DATA / "edx-analytics-pipeline"
# file name -> (events, blank or comment lines); every line of these files is one or the other
PIPELINE_LOGS = {
    "user_activity_tracking.log": (207, 0),
    "video_timeline.log": (18, 11),
    "problem_response_tracking.log": (846, 0),
}
LMS_PREFIX = "2023-05-23 13:53:13,461 INFO 20 [tracking] [user None] [ip None] logger.py:41 - "


@pytest.fixture(scope="module")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real test data not found at {DATA} (the workspace's shared/data folder "
                    "beside the repository; see its SOURCES.md)")
    return DATA


def raw_lines(path: Path) -> list[str]:
    """The file's lines without their endings, read independently of the reader under test."""
    return path.read_bytes().decode("utf-8").splitlines()


def check_no_line_lost(path: Path, items: list) -> None:
    """Events + quarantined + blank/comment lines are every line of the file, each once."""
    lines = raw_lines(path)
    skipped = {n for n, text in enumerate(lines, 1) if not text.strip() or text.strip().startswith("#")}
    numbers = [item.line for item in items]
    assert numbers == sorted(numbers) and len(numbers) == len(set(numbers))
    assert not skipped & set(numbers)
    assert set(numbers) | skipped == set(range(1, len(lines) + 1))


# -- real logs ------------------------------------------------------------------

def test_tracking_log_with_lms_prefix(data_dir):
    items = list(read_events(TRACKING_LOG))
    events = [item for item in items if isinstance(item, LogEvent)]
    quarantined = [item for item in items if isinstance(item, Quarantined)]
    assert len(events) == 10
    assert [q.line for q in quarantined] == [3, 11]
    assert [e.line for e in events] == [1, 2, 4, 5, 6, 7, 8, 9, 10, 12]
    assert all(item.source == str(TRACKING_LOG) for item in items)

    lines = raw_lines(TRACKING_LOG)
    third, eleventh = quarantined
    assert third.text == lines[2] and eleventh.text == lines[10]        # the raw line, prefix included
    assert third.reason.startswith("invalid JSON at column ")
    assert "after the log prefix" in third.reason and "Expecting ',' delimiter" in third.reason
    assert "Unterminated string" in eleventh.reason

    first = events[0].event
    assert first["name"] == "edx.grades.subsection.grade_calculated"
    assert first["event_source"] == "server" and first["time"].startswith("2023-05-23T13:53:13")
    assert events[-1].event["name"] == "edx.course.grade.now_failed"
    check_no_line_lost(TRACKING_LOG, items)


@pytest.mark.parametrize("name", sorted(PIPELINE_LOGS))
def test_pipeline_logs_lose_no_line(data_dir, name):
    path = PIPELINE / name
    expected_events, expected_skipped = PIPELINE_LOGS[name]
    items = list(read_events(path))
    assert all(isinstance(item, LogEvent) for item in items), [i for i in items if isinstance(i, Quarantined)]
    assert len(items) == expected_events
    total = len(raw_lines(path))
    assert len(items) + expected_skipped == total
    check_no_line_lost(path, items)
    assert all(isinstance(item.event.get("event_type"), str) for item in items)


def test_video_timeline_comments_and_blanks_are_skipped(data_dir):
    path = PIPELINE / "video_timeline.log"
    lines = raw_lines(path)
    read = {item.line for item in read_events(path)}
    for number, text in enumerate(lines, 1):
        if text.startswith("#") or not text.strip():
            assert number not in read
        else:
            assert number in read


@pytest.mark.parametrize("name", ["tracking.log.gz", "tracking.log"])
def test_gzip_is_detected_by_magic_bytes(data_dir, tmp_path, name):
    """A gzip copy, named .gz or not, gives the same items as the plain file."""
    copy = tmp_path / name
    copy.write_bytes(gzip.compress(TRACKING_LOG.read_bytes()))
    plain = [item._replace(source="") for item in read_events(TRACKING_LOG)]
    assert [item._replace(source="") for item in read_events(copy)] == plain
    assert all(item.source == str(copy) for item in read_events(copy))


def test_gzip_pipeline_log(data_dir, tmp_path):
    source = PIPELINE / "video_timeline.log"
    copy = tmp_path / "video_timeline.log.gz"
    with gzip.open(copy, "wb") as handle:
        handle.write(source.read_bytes())
    assert [(i.line, i.event) for i in read_events(copy)] == [(i.line, i.event) for i in read_events(source)]


def test_on_line_reports_every_line_and_the_offset(data_dir, tmp_path):
    path = PIPELINE / "video_timeline.log"
    offsets = []
    list(read_events(path, on_line=offsets.append))
    assert len(offsets) == len(raw_lines(path))
    assert offsets == sorted(offsets) and offsets[-1] == path.stat().st_size

    compressed = tmp_path / "v.gz"
    compressed.write_bytes(gzip.compress(path.read_bytes()))
    offsets = []
    list(read_events(compressed, on_line=offsets.append))
    assert len(offsets) == len(raw_lines(path))
    assert offsets == sorted(offsets) and offsets[-1] == compressed.stat().st_size


# -- synthetic lines ----------------------------------------------------------------

def write_lines(tmp_path, *lines: bytes, name="log", ending=b"\n") -> Path:
    path = tmp_path / name
    path.write_bytes(ending.join(lines))
    return path


def test_non_objects_are_quarantined_with_their_kind(tmp_path):
    path = write_lines(tmp_path, b'[1, 2]', b'"a string"', b'42', b'null', b'true', b'hello', b'{"ok": 1}')
    items = list(read_events(path))
    assert [type(i).__name__ for i in items] == ["Quarantined"] * 6 + ["LogEvent"]
    reasons = [i.reason for i in items[:6]]
    assert reasons == ["not a JSON object but an array", "not a JSON object but a string",
                       "not a JSON object but a number", "not a JSON object but null",
                       "not a JSON object but a boolean", "no JSON object on the line"]
    assert [i.text for i in items[:6]] == ['[1, 2]', '"a string"', '42', 'null', 'true', 'hello']
    assert items[6] == LogEvent(str(path), 7, {"ok": 1})


def test_invalid_json_reason_names_the_column(tmp_path):
    path = write_lines(tmp_path, b'{"a": 1,}', b'{"a": 1}{"b": 2}', b'{"a": "unterminated')
    first, second, third = read_events(path)
    assert first.reason == "invalid JSON at column 9: Expecting property name enclosed in double quotes"
    assert second.reason == "invalid JSON at column 9: Extra data"
    assert third.reason.startswith("invalid JSON at column 7: Unterminated string")


def test_bad_utf8_is_quarantined_and_reading_goes_on(tmp_path):
    path = write_lines(tmp_path, b'{"user": "Jos\xe9"}', b'{"user": "Jos\xc3\xa9"}', b'\xff\xfe{}')
    bad, good, worse = read_events(path)
    assert isinstance(bad, Quarantined) and bad.line == 1
    assert bad.reason.startswith("not UTF-8: byte 0xe9 at byte 14")
    assert bad.text == '{"user": "Jos\\xe9"}'
    assert good == LogEvent(str(path), 2, {"user": "José"})
    assert isinstance(worse, Quarantined) and worse.reason.startswith("not UTF-8: byte 0xff at byte 1")


@pytest.mark.parametrize("line, expected", [
    (LMS_PREFIX + '{"name": "x"}', {"name": "x"}),
    ("2014-01-01 00:00:00,000 INFO 1 [tracking] logger.py:60 - {\"a\": {\"b\": 2}}", {"a": {"b": 2}}),
    # a prefix with a brace before " - {": the object after " - " is the event
    ("[user {weird}] - {\"a\": 1}", {"a": 1}),
    # syslog style, no " - ": the first brace
    ("Jan  1 00:00:00 lms-1 tracking: {\"a\": 1}", {"a": 1}),
    # the NUL bytes a copytruncate rotation leaves at the start of a line
    ("\x00\x00\x00{\"a\": 1}", {"a": 1}),
    ("   {\"a\": 1}   ", {"a": 1}),
    ("", None), ("   ", None), ("# a comment", None), ("   # indented comment {\"a\": 1}", None),
])
def test_parse_line_prefix_forms(line, expected):
    assert parse_line(line) == expected


def test_prefixed_invalid_json_column_is_in_the_line():
    with pytest.raises(ValueError) as info:
        parse_line(LMS_PREFIX + '{"a": }')
    column = len(LMS_PREFIX) + len('{"a": ') + 1
    assert str(info.value) == f"invalid JSON at column {column} (after the log prefix): Expecting value"


def test_line_endings_bom_and_missing_final_newline(tmp_path):
    path = write_lines(tmp_path, b'\xef\xbb\xbf{"a": 1}', b"", b"# c", b'{"a": 2}', ending=b"\r\n")
    assert [(i.line, i.event) for i in read_events(path)] == [(1, {"a": 1}), (4, {"a": 2})]
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert list(read_events(empty)) == []


def test_truncated_gzip_keeps_what_was_read_and_says_where_it_stopped(tmp_path):
    body = b"".join(b'{"n": %d, "pad": "%s"}\n' % (n, b"x" * 200) for n in range(2000))
    path = tmp_path / "cut.log.gz"
    compressed = gzip.compress(body)
    path.write_bytes(compressed[: len(compressed) // 2])
    items = list(read_events(path))
    *events, last = items
    assert events and all(isinstance(e, LogEvent) for e in events)
    assert [e.event["n"] for e in events] == list(range(len(events)))
    assert isinstance(last, Quarantined) and last.line == len(events) + 1 and last.text == ""
    assert last.reason.startswith(f"unreadable gzip data after line {len(events)}: ")


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(read_events(tmp_path / "nope.log"))


# -- quarantine files -------------------------------------------------------------------

def write_quarantine(path: Path, entries: list) -> Path:
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in entries),
                    encoding="utf-8")
    return path


def test_read_quarantine_feeds_fixed_lines_with_their_origin(data_dir, tmp_path):
    quarantined = [i for i in read_events(TRACKING_LOG) if isinstance(i, Quarantined)]
    entries = [q.entry() for q in quarantined]
    assert set(entries[0]) == {"file", "line", "reason", "text"}
    unfixed = write_quarantine(tmp_path / "q.jsonl", entries)
    again = list(read_quarantine(unfixed))
    assert again == quarantined                    # same file, line, reason and text

    entries[0]["text"] = entries[0]["text"].replace('"context": "course_id"', '"context": {"course_id"')
    fixed = write_quarantine(tmp_path / "fixed.jsonl", entries)
    first, second = read_quarantine(fixed)
    assert isinstance(first, LogEvent) and (first.source, first.line) == (str(TRACKING_LOG), 3)
    assert first.event["name"] == "edx.course.grade.now_failed"
    assert first.event["context"]["course_id"] == "course-v1:edX+DemoX+Demo_Course"
    assert second == quarantined[1]


def test_read_quarantine_malformed_and_dropped_entries(tmp_path):
    entries = [
        {"file": "a.log", "line": 1, "reason": "r", "text": '{"ok": 1}'},
        "# {\"file\": \"a.log\", \"line\": 2, \"reason\": \"r\", \"text\": \"dropped by the admin\"}",
        {"file": "a.log", "line": 3, "reason": "r", "text": ""},                   # blanked: dropped
        '{"file": "a.log", "line": 4, "text": "broken wrapper',
        {"file": "a.log", "line": 5, "reason": "r"},                                # no text
        ["not", "an", "entry"],
        "",
        {"file": "a.log", "line": 8, "reason": "r", "text": "still [broken"},
        {"file": "b.log", "line": 9, "reason": "r", "text": LMS_PREFIX + '{"ok": 2}'},
    ]
    path = write_quarantine(tmp_path / "q.jsonl", entries)
    items = list(read_quarantine(path))
    assert [(type(i).__name__, i.source, i.line) for i in items] == [
        ("LogEvent", "a.log", 1),
        ("Quarantined", str(path), 4),
        ("Quarantined", str(path), 5),
        ("Quarantined", str(path), 6),
        ("Quarantined", "a.log", 8),
        ("LogEvent", "b.log", 9),
    ]
    assert items[1].reason.startswith("malformed quarantine entry: Unterminated string")
    assert items[1].text == entries[3]
    assert items[2].reason == 'malformed quarantine entry: no "text" string'
    assert items[3].reason == "malformed quarantine entry: not a JSON object"
    assert items[4].reason == "no JSON object on the line" and items[4].text == "still [broken"
    assert items[5].event == {"ok": 2}


def test_read_quarantine_gzip(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_bytes(gzip.compress(b'{"file": "x", "line": 7, "reason": "r", "text": "{\\"a\\": 1}"}\n'))
    assert list(read_quarantine(path)) == [LogEvent("x", 7, {"a": 1})]



def test_a_line_hostd_would_refuse_is_quarantined_not_sent(tmp_path):
    """NaN, 1e999 and the like are valid to Python's json but not to hostd: such a line goes to
    quarantine with the reason, instead of making hostd refuse the whole batch it is in."""
    from hostd.logfile import Quarantined, read_events
    log = tmp_path / "t.log"
    log.write_text('{"a": 1}\n{"b": NaN}\n{"c": 1e999}\n{"d": 2}\n', encoding="utf-8")
    items = list(read_events(log))
    assert [type(i).__name__ for i in items] == ["LogEvent", "Quarantined", "Quarantined", "LogEvent"]
    assert "not a JSON number" in items[1].reason and "1e999" in items[2].text
    assert isinstance(items[2], Quarantined)
