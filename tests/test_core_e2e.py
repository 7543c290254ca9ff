"""The core under load, against a real ``hostd serve``: status during a large ingest, and a
stop of fifty modules at once that loses no event."""
from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from running_hostd import Daemon, launch, wait_announced, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

COUNTER = '''"""Counts events once each, keyed by their identity (deliveries may repeat)."""
from pymongo import UpdateOne

from sandbox import event_handler, query


@event_handler()
def count_{n}(db, events):
    db["seen"].bulk_write([UpdateOne({{"_id": "e|" + e.meta["id"]}}, {{"$set": {{"x": 1}}}}, upsert=True)
                           for e in events])


@query()
def counted_{n}(db):
    result = list(db["seen"].aggregate([{{"$count": "n"}}]))
    return result[0]["n"] if result else 0
'''


def _counter_modules(folder: Path, count: int) -> list[str]:
    names = []
    for n in range(count):
        module = folder / f"counter_{n:02d}"
        module.mkdir(parents=True)
        (module / "__init__.py").write_text(COUNTER.format(n=n), encoding="utf-8")
        names.append(module.name)
    return names


def _start(tmp: Path, modules: Path, data_dir: Path, extra_config: str = "") -> Daemon:
    config = tmp / "hostd.toml"
    config.write_text("[server]\nworkers = 2\n\n[limits]\nstart_timeout_s = 120\n" + extra_config,
                      encoding="utf-8")
    process, base, log_path = launch(tmp, data_dir, config, modules)
    daemon = Daemon(process, base, log_path, data_dir)
    try:
        wait_announced(process, log_path, timeout_s=180)
    except BaseException:
        process.kill()
        raise
    return daemon


def _sigterm(daemon: Daemon, timeout_s: float) -> float:
    """SIGTERM hostd: :returns: the seconds it took to exit 0 (it must, within ``timeout_s``)."""
    started = time.time()
    daemon.process.send_signal(signal.SIGTERM)
    status = daemon.process.wait(timeout_s)
    assert status == 0, daemon.log()[-3000:]
    return time.time() - started


@pytest.fixture
def data_dir():
    folder = Path(tempfile.mkdtemp(prefix="insights-core-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_modules_answers_during_a_20000_event_post(tmp_path, data_dir):
    """``/modules`` is served from memory, off the store: a large ingest does not hold it up."""
    modules = tmp_path / "modules"
    _counter_modules(modules, 2)
    daemon = _start(tmp_path, modules, data_dir)
    try:
        wait_until(lambda: all(m["state"] == "running" for m in daemon.modules().values()), 60,
                   what="both modules running")
        events = [{"id": f"big-{i}", "event_type": "load", "username": f"u{i % 97}", "n": i}
                  for i in range(20_000)]
        posted = {}
        poster = threading.Thread(target=lambda: posted.update(answer=daemon.post("/event", json=events,
                                                                                   timeout=300)))
        poster.start()
        answered_during_post = 0
        while poster.is_alive():
            answer = requests.get(daemon.base + "/modules", timeout=1.0)  # raises if it takes longer
            assert answer.status_code == 200, answer.text
            if poster.is_alive():
                answered_during_post += 1
            time.sleep(0.2)
        poster.join()
        assert posted["answer"].status_code == 202, posted["answer"].text
        assert posted["answer"].json()["accepted"] == 20_000
        assert answered_during_post >= 1, "the POST ended before /modules could be asked"
        assert wait_until(lambda: daemon.query("counted_0") == 20_000, 120, what="all events counted")
    finally:
        _sigterm(daemon, 60)


def test_sigterm_with_fifty_modules_stops_them_all_at_once_and_loses_no_event(tmp_path, data_dir):
    """Fifty sandboxes stop in parallel; the events they had not handled yet are handled after a restart."""
    modules = tmp_path / "modules"
    names = _counter_modules(modules, 50)
    daemon = _start(tmp_path, modules, data_dir)
    wait_until(lambda: sum(m["state"] == "running" for m in daemon.modules().values()) == 50, 180,
               what="fifty modules running")
    events = [{"id": f"stop-{i}", "event_type": "load", "username": f"u{i}"} for i in range(500)]
    for start in range(0, len(events), 100):
        answer = daemon.post("/event", json=events[start:start + 100])
        assert answer.status_code == 202, answer.text
    took = _sigterm(daemon, 20)  # while delivery to fifty handlers is under way
    assert took < 20

    daemon = _start(tmp_path, modules, data_dir)
    try:
        def all_counted():
            return all(daemon.query(f"counted_{n}") == len(events) for n in range(len(names)))
        wait_until(all_counted, 180, interval_s=1.0, what="every module counting every event once")
    finally:
        _sigterm(daemon, 60)
