"""Demo data: how fast ``hostd demo`` generates a course, and how fast hostd digests it.

(a) **Generation**: ``hostd.demo.generate`` for ``--learners`` learners over
    ``--weeks`` weeks (default 500 over 8), ``--runs`` times; events/s of the
    simulation alone, and of writing ``demo_events.log`` and ``demo_truth.json``.
(b) **Pipeline**: a ``hostd serve`` (embedded store) runs copies of
    ``contrib_modules/irt`` (sees the server ``problem_check`` events) and
    ``contrib_modules/event_count`` (sees every event); the stream is POSTed the
    way ``hostd demo --load`` does it (``hostd.replay.Sender``, one client,
    ``--batch`` events per request) and the clock stops when ``GET /modules``
    shows a ``lag`` of 0 for both modules and ``event_count`` counted every event.
    The store's ceiling, as in ``bench/ingest.py``: raw ``insert_many`` of the
    same events in the same batches from one client into the same store, run in
    the same process right after. Then one ``irt_items`` query (the model fit).

    python bench/demo.py [--learners 500] [--weeks 8] [--runs 3] [--batch 500] [--skip-pipeline]

Each pipeline run sends a fresh stream (another seed), so nothing is a duplicate.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pymongo
import requests

from ingest import free_port, measure_ceiling, start_hostd, stop_process, store_url, wait_modules

from hostd.demo import generate
from hostd.demo.command import load_events, write_demo
from hostd.replay import Sender

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("irt", "event_count")
POLL_S = 0.1


class _NoBar:
    """``load_events`` wants a progress bar; a benchmark prints none."""

    def update(self, count: int) -> None:
        pass


def bench_generation(args) -> list[dict]:
    runs = []
    for run in range(args.runs):
        t0 = time.perf_counter()
        demo = generate(seed=run, learners=args.learners, weeks=args.weeks)
        simulated = time.perf_counter() - t0
        with tempfile.TemporaryDirectory(prefix="insights-bench-demo-") as out:
            t1 = time.perf_counter()
            events_path, _ = write_demo(demo, Path(out))
            written = time.perf_counter() - t1
            size = events_path.stat().st_size
        runs.append({"events": len(demo.events), "rate": len(demo.events) / simulated,
                     "with_files": len(demo.events) / (simulated + written), "mb": size / 2**20})
        print(f"  run {run + 1}: {len(demo.events)} events, simulated at {runs[-1]['rate']:.0f} ev/s, "
              f"{runs[-1]['with_files']:.0f} ev/s with the files written ({runs[-1]['mb']:.0f} MB of log)",
              flush=True)
    return runs


def _status(base: str) -> dict:
    return requests.get(base + "/modules", timeout=30).json()


def _count(base: str) -> int:
    return requests.get(base + "/query/event_count", timeout=30).json()


def bench_pipeline(args) -> list[dict]:
    modules = Path(tempfile.mkdtemp(prefix="insights-bench-demo-modules-"))
    data_dir = tempfile.mkdtemp(prefix="insights-bench-demo-")
    for name in MODULES:
        shutil.copytree(ROOT / "contrib_modules" / name, modules / name, ignore=shutil.ignore_patterns("tests"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    hostd = client = None
    runs = []
    try:
        hostd = start_hostd(modules, data_dir, port, args.workers)
        wait_modules(port, MODULES, hostd, data_dir)
        client = pymongo.MongoClient(store_url(data_dir), serverSelectionTimeoutMS=10000)
        sender = Sender(base, None, 300.0)
        sent = 0
        for run in range(args.runs):
            events = generate(seed=1000 + run, learners=args.learners, weeks=args.weeks).events
            t0 = time.perf_counter()
            counts = load_events(events, "demo", sender, args.batch, _NoBar())
            acked = time.perf_counter() - t0
            sent += len(events)
            while True:
                status = _status(base)
                if all(status[m]["lag"] == 0 for m in MODULES) and _count(base) == sent:
                    break
                if time.perf_counter() - t0 > args.timeout:
                    raise RuntimeError(f"not processed after {args.timeout:.0f} s: {status}")
                time.sleep(POLL_S)
            done = time.perf_counter() - t0
            t1 = time.perf_counter()
            items = requests.get(base + "/query/irt_items", timeout=300).json()
            fitted = time.perf_counter() - t1
            ceiling = measure_ceiling(client, events, args.batch, 1, f"demo{run}", journal=False)
            runs.append({"events": len(events), "accepted": counts["accepted"], "rate": len(events) / done,
                         "acked_rate": len(events) / acked, "ceiling": ceiling, "fit_s": fitted,
                         "items": len(items)})
            print(f"  run {run + 1}: {len(events)} events processed by both modules at {runs[-1]['rate']:.0f} ev/s"
                  f" (POSTs acked at {runs[-1]['acked_rate']:.0f} ev/s); insert_many ceiling {ceiling:.0f} ev/s;"
                  f" irt_items fit {fitted:.2f} s for {len(items)} problems", flush=True)
        sender.close()
    finally:
        if client is not None:
            client.close()
        stop_process(hostd)
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(modules, ignore_errors=True)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", type=int, default=500)
    parser.add_argument("--weeks", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500, help="events per POST and per insert_many")
    parser.add_argument("--workers", type=int, default=2, help="hostd web workers")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for one run to be processed")
    parser.add_argument("--skip-pipeline", action="store_true", help="only time the generation")
    args = parser.parse_args()
    print(f"demo benchmark: learners={args.learners} weeks={args.weeks} runs={args.runs} batch={args.batch}",
          flush=True)
    print("(a) generation", flush=True)
    generation = bench_generation(args)
    pipeline = []
    if not args.skip_pipeline:
        print("(b) pipeline: POST /event (one client) until irt and event_count have a lag of 0", flush=True)
        pipeline = bench_pipeline(args)
    print()
    print(f"medians of {args.runs} runs")
    print(f"generation: {statistics.median(r['rate'] for r in generation):.0f} events/s simulated, "
          f"{statistics.median(r['with_files'] for r in generation):.0f} events/s with the files written "
          f"({statistics.median(r['events'] for r in generation):.0f} events a run)")
    if pipeline:
        rate = statistics.median(r["rate"] for r in pipeline)
        ceiling = statistics.median(r["ceiling"] for r in pipeline)
        print(f"pipeline: {rate:.0f} events/s until lag 0 (POSTs acked at "
              f"{statistics.median(r['acked_rate'] for r in pipeline):.0f} events/s); insert_many ceiling "
              f"{ceiling:.0f} events/s; ratio {rate / ceiling:.2f}x; irt fit "
              f"{statistics.median(r['fit_s'] for r in pipeline):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
