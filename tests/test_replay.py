"""End-to-end tests of ``hostd replay``: a real ``hostd serve``, the command run as a subprocess.

The daemon runs the bundled ``contrib_modules``; ``dump_to_db`` stores every
event it is handed, so ``/query/dumped_count`` shows what reached the modules.
Each test measures from the count it finds (waiting for the handler to catch up
first), so the tests do not depend on each other. The files replayed are real
edX logs from ``../shared/data`` (skipped when absent). The error paths
(refused batch, bad token, body too large) are checked against a small fake
daemon in a thread, since a real one never refuses lines the reader validated.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[1]
CONTRIB = REPO / "contrib_modules"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TRACKING_LOG = DATA / "event-routing-backends" / "tracking.log"
PIPELINE_LOGS = [DATA / "edx-analytics-pipeline" / name for name in
                 ("user_activity_tracking.log", "video_timeline.log", "problem_response_tracking.log")]
HTTP_TIMEOUT_S = 30
SUMMARY_LINE = re.compile(r"^(lines read|events read|events sent|accepted|duplicates|"
                          r"skipped \(blank or # comment\)|quarantined): (\d+)", re.M)


# -- helpers ----------------------------------------------------------------

from running_hostd import free_port as _free_port, launch, wait_announced, wait_until  # noqa: E402


def identity(event: dict) -> str:
    """SPEC §3: ``id`` / ``event_id``, else the SHA-256 of the canonical JSON."""
    for field in ("id", "event_id"):
        if event.get(field) not in (None, ""):
            return str(event[field])
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def replay(*args, cwd) -> subprocess.CompletedProcess:
    """Run ``hostd replay ARGS`` in ``cwd``."""
    command = [sys.executable, "-c", "from hostd.cli import main; main()", "replay", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)


def summary(result: subprocess.CompletedProcess) -> dict:
    """:returns: the summary's numbers, e.g. ``{"accepted": 10, ...}``."""
    numbers = {key: int(value) for key, value in SUMMARY_LINE.findall(result.stdout)}
    assert len(numbers) == 7, (result.stdout, result.stderr)
    assert numbers["lines read"] == (numbers["events read"] + numbers["quarantined"]
                                     + numbers["skipped (blank or # comment)"])
    return numbers


def ok(result: subprocess.CompletedProcess) -> dict:
    """:returns: the summary of a replay that must have exited 0."""
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return summary(result)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real test data not found at {DATA} (the workspace's shared/data folder "
                    "beside the repository; see its SOURCES.md)")
    return DATA


class Daemon:
    """A running ``hostd serve``."""

    def __init__(self, process, base, log_path):
        self.process, self.base, self.log_path = process, base, log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def query(self, name, **params):
        """:returns: a query's result, waiting out 502/503 while the web workers learn the module runs."""
        def attempt():
            response = requests.get(f"{self.base}/query/{name}", params=params, timeout=HTTP_TIMEOUT_S)
            return None if response.status_code in (502, 503) else (response,)
        response = wait_until(attempt, 30, what=f"query {name} answering")[0]
        assert response.status_code == 200, (name, response.status_code, response.text)
        return response.json()

    def dump_module(self) -> dict:
        response = requests.get(f"{self.base}/modules", timeout=HTTP_TIMEOUT_S)
        assert response.status_code == 200, response.text
        return response.json()["dump_to_db"]

    def settled_count(self) -> int:
        """:returns: ``dumped_count`` once ``dump_to_db`` has handled every logged event."""
        wait_until(lambda: self.dump_module()["lag"] == 0, 60, what="dump_to_db caught up")
        return self.query("dumped_count")

    def wait_count(self, expected: int) -> None:
        """Wait until ``dump_to_db`` stored ``expected`` events, then check it stays there."""
        wait_until(lambda: self.query("dumped_count") >= expected, 90, interval_s=0.2,
                   what=f"dumped_count reaching {expected}")
        assert self.settled_count() == expected


@pytest.fixture(scope="module")
def hostd(tmp_path_factory):
    """A real ``hostd serve`` with the contrib modules, stopped with SIGTERM at the end."""
    tmp = tmp_path_factory.mktemp("hostd_replay")
    config = tmp / "hostd.toml"
    config.write_text("[supervisor]\nbackoff_initial_s = 0.2\n", encoding="utf-8")
    process, base, log_path = launch(tmp, tmp / "data", config, CONTRIB)
    daemon = Daemon(process, base, log_path)
    try:
        wait_announced(process, log_path)
        wait_until(lambda: daemon.dump_module()["state"] == "running", 60, what="dump_to_db running")
        yield daemon
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"hostd did not exit within 30 s of SIGTERM:\n{daemon.log()[-5000:]}")
        assert status == 0, f"hostd exited with {status}:\n{daemon.log()[-5000:]}"


def fix_tracking_line(text: str) -> str:
    """The repair an administrator would make to lines 3 and 11 of tracking.log."""
    if '"context": "course_id"' in text:
        return text.replace('"context": "course_id"', '"context": {"course_id"')
    assert text.endswith('"eoh no this line is broken'), text
    return text.replace('"eoh no this line is broken', '"edx.grades.problem.submitted"}, '
                        '"event_type": "edx.grades.course.grade_calculated", "event_source": "server"}')


# -- against a real daemon ---------------------------------------------------------

def test_replay_tracking_log_then_duplicates_then_fixed_quarantine(data_dir, hostd, tmp_path):
    before = hostd.settled_count()
    run = replay(TRACKING_LOG, "--url", hostd.base, "--batch-size", 4, cwd=tmp_path)
    result = ok(run)
    assert result == {"lines read": 12, "events read": 10, "events sent": 10, "accepted": 10,
                      "duplicates": 0, "skipped (blank or # comment)": 0, "quarantined": 2}
    quarantine = tmp_path / "tracking.log.quarantine.jsonl"       # in the current directory
    assert f"(written to {tmp_path.resolve() / quarantine.name}: 2)" in run.stdout
    entries = read_jsonl(quarantine)
    lines = TRACKING_LOG.read_text(encoding="utf-8").splitlines()
    assert [(e["file"], e["line"], e["text"]) for e in entries] == [
        (str(TRACKING_LOG), 3, lines[2]), (str(TRACKING_LOG), 11, lines[10])]
    assert all(e["reason"].startswith("invalid JSON at column ") for e in entries)
    assert "Expecting ',' delimiter" in entries[0]["reason"]
    assert "Unterminated string" in entries[1]["reason"]
    hostd.wait_count(before + 10)
    names = [e["name"] for e in hostd.query("dumped_events", limit=10)]
    assert names[0] == "edx.grades.subsection.grade_calculated" and names[-1] == "edx.course.grade.now_failed"
    assert "edx.grades.subsection.grade_calculated2" in names

    # the same file again: all duplicates, stored once; the quarantine file is rewritten, not appended to
    again = ok(replay(TRACKING_LOG, "--url", hostd.base, cwd=tmp_path))
    assert (again["events sent"], again["accepted"], again["duplicates"], again["quarantined"]) == (10, 0, 10, 2)
    assert read_jsonl(quarantine) == entries

    # fed back unfixed: both fail again, into the next quarantine file, with their origin
    unfixed = ok(replay("--from-quarantine", quarantine, "--url", hostd.base, cwd=tmp_path))
    assert (unfixed["lines read"], unfixed["events sent"], unfixed["quarantined"]) == (2, 0, 2)
    assert read_jsonl(tmp_path / "tracking.log.quarantine-2.jsonl") == entries

    # fixed by the administrator in a copy: both are fed, nothing is quarantined
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text("".join(json.dumps({**e, "text": fix_tracking_line(e["text"])}) + "\n" for e in entries),
                     encoding="utf-8")
    result = ok(replay("--url", hostd.base, "--from-quarantine", fixed, cwd=tmp_path))
    assert result == {"lines read": 2, "events read": 2, "events sent": 2, "accepted": 2,
                      "duplicates": 0, "skipped (blank or # comment)": 0, "quarantined": 0}
    assert not (tmp_path / "fixed.quarantine.jsonl").exists()
    hostd.wait_count(before + 12)
    repaired = hostd.query("dumped_events", limit=2)
    assert [e["name"] for e in repaired] == ["edx.course.grade.now_failed", "edx.grades.course.grade_calculated"]
    assert repaired[0]["context"]["course_id"] == "course-v1:edX+DemoX+Demo_Course"
    assert repaired[1]["event"]["event_transaction_type"] == "edx.grades.problem.submitted"


def test_replay_pipeline_logs_and_a_gzip_copy(data_dir, hostd, tmp_path):
    events = [json.loads(line) for path in PIPELINE_LOGS for line in path.read_text(encoding="utf-8").splitlines()
              if line.strip() and not line.startswith("#")]
    distinct = len({identity(e) for e in events})
    before = hostd.settled_count()
    result = ok(replay(*PIPELINE_LOGS, "--url", hostd.base, "--batch-size", 100, cwd=tmp_path))
    assert result == {"lines read": 207 + 29 + 846, "events read": 1071, "events sent": 1071,
                      "accepted": distinct, "duplicates": 1071 - distinct,
                      "skipped (blank or # comment)": 11, "quarantined": 0}
    assert list(tmp_path.iterdir()) == []                          # no quarantine file when none is needed
    hostd.wait_count(before + distinct)

    # a gzip copy, its name without .gz: the same events, all already logged
    copy = tmp_path / "video_timeline.copy"
    copy.write_bytes(gzip.compress(PIPELINE_LOGS[1].read_bytes()))
    run = replay(copy, "--url", hostd.base + "/", "--progress", cwd=tmp_path)
    again = ok(run)
    assert (again["lines read"], again["events sent"], again["accepted"], again["duplicates"]) == (29, 18, 0, 18)
    assert "replay: 100%" in run.stderr                            # the bar, forced on though not a terminal


def test_unreachable_daemon_is_a_clear_error(data_dir, tmp_path):
    result = replay(TRACKING_LOG, "--url", f"http://127.0.0.1:{_free_port()}", cwd=tmp_path)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "cannot connect to http://127.0.0.1:" in result.stderr
    assert "Connection refused" in result.stderr and "is `hostd serve` running there?" in result.stderr
    assert "Traceback" not in result.stderr
    numbers = summary(result)                                     # what was done before it stopped
    assert (numbers["events read"], numbers["events sent"], numbers["quarantined"]) == (10, 0, 2)


def test_no_input_is_a_usage_error(tmp_path):
    result = replay(cwd=tmp_path)
    assert result.returncode == 2 and "give at least one FILE or --from-quarantine FILE" in result.stderr


def test_quarantine_output_may_not_overwrite_its_input(tmp_path):
    quarantine = tmp_path / "q.jsonl"
    quarantine.write_text("", encoding="utf-8")
    result = replay("--from-quarantine", quarantine, "--quarantine", quarantine, cwd=tmp_path)
    assert result.returncode == 2 and "is also an input" in result.stderr


# -- against a fake daemon: the answers a real one gives only in trouble --------------

class FakeDaemon:
    """``POST /event`` answered by ``respond(events) -> (status, body)``; requests are recorded."""

    def __init__(self, respond):
        self.respond = respond
        self.requests: list[tuple[dict, list]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append((dict(self.headers), body))
                status, answer = fake.respond(body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def accepted(events):
    return 202, {"accepted": len(events), "duplicates": 0, "ids": [identity(e) for e in events]}


def test_refused_batch_names_its_lines_and_exits_non_zero(data_dir, tmp_path):
    def respond(events):
        if any(e.get("name") == "edx.grades.problem.submitted" for e in events):
            index = next(i for i, e in enumerate(events) if e.get("name") == "edx.grades.problem.submitted")
            return 400, {"error": {"code": "bad_event", "message": f"item {index}: refused", "index": index}}
        return accepted(events)

    with FakeDaemon(respond) as fake:
        result = replay(TRACKING_LOG, "--url", fake.url, "--batch-size", 3, "--token", "s3cret", cwd=tmp_path)
    assert result.returncode == 1, (result.stdout, result.stderr)
    # batches: lines 1,2,4 then 5,6,7 (line 6 is edx.grades.problem.submitted)
    assert f"{fake.url}/event answered 400 for {TRACKING_LOG} lines 5-7: bad_event: item 1: refused " \
           f"(item 1 is {TRACKING_LOG} line 6); the daemon refused the batch" in result.stderr
    assert "running the same replay again is safe" in result.stderr
    numbers = summary(result)
    assert (numbers["events sent"], numbers["accepted"]) == (3, 3)
    assert [len(body) for _, body in fake.requests] == [3, 3]
    assert all(headers["Authorization"] == "Bearer s3cret" for headers, _ in fake.requests)
    assert all(headers["Content-Type"] == "application/json" for headers, _ in fake.requests)


def test_too_large_batches_are_split(data_dir, tmp_path):
    def respond(events):
        if len(events) > 2:
            return 413, {"error": {"code": "too_large", "message": "request body is over 1 MiB"}}
        return accepted(events)

    with FakeDaemon(respond) as fake:
        result = ok(replay(TRACKING_LOG, "--url", fake.url, "--batch-size", 5, cwd=tmp_path))
    assert (result["events sent"], result["accepted"]) == (10, 10)
    sent = [body for _, body in fake.requests if len(body) <= 2]
    assert [e["name"] for body in sent for e in body] == [
        json.loads(line[line.index(" - ") + 3:])["name"]
        for n, line in enumerate(TRACKING_LOG.read_text(encoding="utf-8").splitlines(), 1) if n not in (3, 11)]
    assert all("Authorization" not in headers for headers, _ in fake.requests)


def test_answer_that_is_not_hostd_is_an_error(data_dir, tmp_path):
    with FakeDaemon(lambda events: (200, {"hello": "world"})) as fake:
        result = replay(TRACKING_LOG, "--url", fake.url, cwd=tmp_path)
    assert result.returncode == 1
    assert "without the expected JSON counts" in result.stderr and "is --url a hostd daemon?" in result.stderr


def test_late_realtime_handlers_are_not_a_failure(data_dir, tmp_path):
    """504 with the ingestion counts: the events are logged, only realtime handlers are late."""
    def respond(events):
        return 504, {"error": {"code": "timeout", "message": "realtime handlers did not finish",
                               "accepted": len(events), "duplicates": 0, "ids": [identity(e) for e in events]}}

    with FakeDaemon(respond) as fake:
        run = replay(TRACKING_LOG, "--url", fake.url, "--batch-size", 6, cwd=tmp_path)
    assert (ok(run)["events sent"], ok(run)["accepted"]) == (10, 10)
    assert "realtime handlers late (504) for 2 request(s)" in run.stdout

    with FakeDaemon(lambda events: (504, {"error": {"code": "timeout", "message": "gateway"}})) as fake:
        run = replay(TRACKING_LOG, "--url", fake.url, cwd=tmp_path)
    assert run.returncode == 1 and "answered 504" in run.stderr and "timeout: gateway" in run.stderr


def test_relative_input_is_recorded_with_its_absolute_path(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "t.log").write_bytes(b'{"a": 1}\nnot json\n')
    with FakeDaemon(accepted) as fake:
        run = replay("logs/t.log", "--url", fake.url, cwd=tmp_path)
    assert ok(run)["quarantined"] == 1
    assert read_jsonl(tmp_path / "t.log.quarantine.jsonl") == [
        {"file": str((tmp_path / "logs" / "t.log").resolve()), "line": 2,
         "reason": "no JSON object on the line", "text": "not json"}]
    bad_url = replay("logs/t.log", "--url", "127.0.0.1:8000", cwd=tmp_path)
    assert bad_url.returncode == 2 and "is not an http:// or https:// URL" in bad_url.stderr
