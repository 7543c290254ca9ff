"""Property filters: a handler filtered on an event property vs. the same handler filtered on the raw field.

Starts ``hostd serve`` (embedded store) with a data layer only
(``bench/property_modules/pf_layer``, whose ``properties.py`` defines
``evt.bench.verb = "http://x/" + event_type``; ``--layer tincan`` uses
``contrib_modules/tincan`` and ``tincan.verb.id`` instead), and POSTs N
edX-like events (a eighth of them ``play_video``) once. Then, for each run,
alternating which goes first, it adds a module whose one queued handler counts
what its filter lets through, and times the backfill through the whole log:

* **property**: ``filter={"bench.verb": "http://x/play_video"}`` (or
  ``{"tincan.verb.id": ".../verbs/played"}``);
* **raw field**: ``filter={"event_type": "play_video"}``, the field the
  property derives from.

Everything goes through public behaviour only (a module folder added to a
watched modules dir, ``GET /modules`` for the handler's state and lag, the
handler's own count through ``/query``), so the bench measures the same thing
wherever properties are evaluated. The clock starts when ``/modules`` first
shows the new module running and stops when its handler's lag is 0; the
handler's own count must then equal the matching events. Prints the per-run
figures, the medians and the ratio property / raw (target >= 0.5x).

    python bench/property_filter.py [--runs 5] [--events 20000] [--layer bench|tincan] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import ingest  # noqa: E402  (bench/ingest.py: hostd start/stop, events, HTTP helpers)

LAYERS = {
    "bench": (HERE / "property_modules" / "pf_layer", {"bench.verb": "http://x/play_video"}),
    "tincan": (ROOT / "contrib_modules" / "tincan", {"tincan.verb.id": "https://w3id.org/xapi/video/verbs/played"}),
}
RAW_FILTER = {"event_type": "play_video"}
CONSUMER = '''"""Bench consumer {name}: counts the events its filter lets through."""
from sandbox import event_handler, query


@event_handler(filter={filter!r})
def take_{name}(db, events):
    if events:
        db["counts"].update_one({{"_id": "n"}}, {{"$inc": {{"n": len(events)}}}}, upsert=True)


@query()
def count_{name}(db):
    doc = db["counts"].find_one({{"_id": "n"}})
    return doc["n"] if doc else 0
'''


def load_log(port: int, events: list[dict], batch: int, clients: int) -> None:
    """POST the events and wait for every answer."""
    def post(chunk):
        status, answer = ingest.http_json(port, "POST", "/event", json.dumps(chunk).encode(), timeout=120)
        if status not in (200, 202) or (answer or {}).get("accepted") != len(chunk):
            raise RuntimeError(f"POST /event answered {status}: {answer}")
    errors = ingest.run_threads(post, ingest.batches(events, batch), clients)
    if errors:
        raise RuntimeError(f"{len(errors)} POSTs failed, first: {errors[0]}")


def _modules(port: int) -> dict:
    status, body = ingest.http_json(port, "GET", "/modules", timeout=30)
    if status != 200:
        raise RuntimeError(f"GET /modules answered {status}")
    return body


def backfill(port: int, modules_dir: Path, name: str, filter: dict, expected: int, timeout_s: float) -> dict:
    """Add consumer module ``name`` with ``filter``, time its handler through the whole log, remove it.

    :returns: ``{"seconds", "delivered"}``.
    """
    folder = modules_dir / name
    folder.mkdir()
    (folder / "__init__.py").write_text(CONSUMER.format(name=name, filter=filter))
    deadline = time.perf_counter() + timeout_s
    t0 = None
    try:
        while True:
            entry = _modules(port).get(name) or {}
            now = time.perf_counter()
            if t0 is None and entry.get("state") == "running":
                t0 = now
            handler = (entry.get("handlers") or {}).get(f"take_{name}")
            if t0 is not None and handler and handler.get("position") and handler.get("lag") == 0:
                seconds = now - t0
                break
            if entry.get("state") in ("failed", "crashloop"):
                raise RuntimeError(f"{name} {entry['state']}: {entry.get('last_error')}")
            if now > deadline:
                raise RuntimeError(f"{name} not through the log after {timeout_s:.0f} s: {entry}")
            time.sleep(0.02)
        status, delivered = ingest.http_json(port, "GET", f"/query/count_{name}")
        if status != 200 or delivered != expected:
            raise RuntimeError(f"{name} counted {delivered!r} ({status}), expected {expected}")
        return {"seconds": seconds, "delivered": delivered}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        end = time.time() + 30
        while time.time() < end and name in _modules(port):
            time.sleep(0.1)


def measure(runs: int, count: int, layer: str, batch: int = 500, clients: int = 2, workers: int = 2,
            users: int = 300) -> dict:
    """Run the bench. :returns: ``{"property": [run...], "raw": [run...], "events", "matching", ...}``,
    each run ``{"seconds", "delivered", "rate", "log_rate"}``."""
    layer_folder, property_filter = LAYERS[layer]
    filters = {"property": property_filter, "raw": RAW_FILTER}
    work = Path(tempfile.mkdtemp(prefix="insights-bench-pf-"))
    modules_dir, data_dir = work / "modules", work / "data"
    modules_dir.mkdir()
    data_dir.mkdir()
    (modules_dir / layer_folder.name).symlink_to(layer_folder)
    port = ingest.free_port()
    hostd = None
    results: dict = {"property": [], "raw": []}
    try:
        hostd = ingest.start_hostd(modules_dir, str(data_dir), port, workers)
        ingest.wait_modules(port, [layer_folder.name], hostd, str(data_dir))
        events = ingest.make_events(count, users, seed=7)
        matching = sum(e["event_type"] == "play_video" for e in events)
        load_log(port, events, batch, clients)
        timeout_s = max(120.0, count / 100)
        for kind in filters:  # warm-up: both paths once
            backfill(port, modules_dir, f"pf_{kind}_warm", filters[kind], matching, timeout_s)
        for run in range(runs):
            for kind in (("property", "raw") if run % 2 == 0 else ("raw", "property")):
                result = backfill(port, modules_dir, f"pf_{kind}_{run}", filters[kind], matching, timeout_s)
                result.update(rate=matching / result["seconds"], log_rate=count / result["seconds"])
                results[kind].append(result)
                print(f"  run {run + 1} {kind:8}: {result['seconds']:.2f} s through {count} events,"
                      f" {result['rate']:.0f} delivered/s", flush=True)
    finally:
        ingest.stop_process(hostd)
        shutil.rmtree(work, ignore_errors=True)
    prop = statistics.median(r["rate"] for r in results["property"])
    raw = statistics.median(r["rate"] for r in results["raw"])
    return {**results, "events": count, "matching": matching, "layer": layer, "filters": filters,
            "property_rate": prop, "raw_rate": raw, "ratio": prop / raw}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--events", type=int, default=20000, help="events in the log")
    parser.add_argument("--layer", choices=sorted(LAYERS), default="bench")
    parser.add_argument("--no-journal", action="store_true", help="run hostd with storage.journal = false")
    parser.add_argument("--json", dest="json_path", help="also write the results to this JSON file")
    args = parser.parse_args()
    ingest.HOSTD_SETTINGS["on"] = not args.no_journal
    print(f"property filter benchmark: runs={args.runs} events={args.events} layer={args.layer}", flush=True)
    result = measure(args.runs, args.events, args.layer)
    print(f"\nmedians of {args.runs} runs; {result['events']} events in the log, {result['matching']} matching")
    print(f"{'filter':9} {'delivered/s':>12} {'log ev/s':>10}  runs (delivered/s)")
    for kind in ("property", "raw"):
        runs = result[kind]
        print(f"{kind:9} {statistics.median(r['rate'] for r in runs):12.0f}"
              f" {statistics.median(r['log_rate'] for r in runs):10.0f}  "
              + " ".join(f"{r['rate']:.0f}" for r in runs) + f"   {json.dumps(result['filters'][kind])}")
    ratio = result["ratio"]
    print(f"ratio property / raw field: {ratio:.2f}x (target >= 0.5x: {'met' if ratio >= 0.5 else 'NOT met'})")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
