"""Several nodes on one store: ingestion and query throughput with 1, 2 and 3 hostd nodes.

Node 1 is ``hostd serve`` with the embedded store; nodes 2 and 3 are more
``hostd serve`` processes, each with its own data dir, started with
``--mongo-url "$(cat <node 1 data dir>/store.url)"`` (the URL is read from the
file, whatever its form). All serve ``bench/modules`` (a trivial query). With
1 node, then 2, then 3 (a node is added between steps), it measures, ``--runs``
times each:

* **ingestion**: N new events POSTed to ``/event`` in batches of ``--batch``,
  ``--clients`` threads per node, spread over the nodes; events/s until every
  POST was answered (the events are then in the shared log);
* **queries**: ``wrk`` on ``/query/trivial`` of every node at once,
  ``--connections`` each; the requests/s summed.

Prints the medians and the ratios against 1 node. Everything runs on this
machine, so more nodes share the same cores: the ratios say what a second and
third node cost or bring here, not on separate machines.

    python bench/nodes.py [--nodes 3] [--runs 3] [--events 5000] [--seconds 3] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import ingest  # noqa: E402
from query_roundtrip import wait_for, wrk  # noqa: E402


def start_node(work: Path, index: int, workers: int, mongo_url: str | None) -> tuple[subprocess.Popen, int, str]:
    """Start node ``index`` (its data dir under ``work``). :returns: ``(process, port, data dir)``."""
    data_dir = work / f"node{index}"
    data_dir.mkdir()
    port = ingest.free_port()
    command = [sys.executable, "-c", "from hostd.cli import main; main()", "serve",
               "--modules", str(HERE / "modules"), "--data-dir", str(data_dir),
               "--port", str(port), "--workers", str(workers)]
    if mongo_url:
        command += ["--mongo-url", mongo_url]
    output = open(data_dir / "hostd.out", "wb")
    process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/query/trivial", 120)
    except RuntimeError:
        tail = (data_dir / "hostd.out").read_text(errors="replace")[-3000:]
        ingest.stop_process(process)
        raise RuntimeError(f"node {index} did not serve /query/trivial; its output:\n{tail}") from None
    return process, port, str(data_dir)


def measure_ingest(ports: list[int], count: int, batch: int, clients: int, seed: int) -> float:
    """:returns: events/s of ``count`` new events POSTed over every node until all are answered."""
    chunks = ingest.batches(ingest.make_events(count, 300, seed), batch)
    bodies = [(ports[n % len(ports)], json.dumps(chunk).encode(), len(chunk)) for n, chunk in enumerate(chunks)]

    def post(item):
        port, body, size = item
        status, answer = ingest.http_json(port, "POST", "/event", body, timeout=120)
        if status not in (200, 202) or (answer or {}).get("accepted") != size:
            raise RuntimeError(f"POST /event to port {port} answered {status}: {answer}")

    t0 = time.perf_counter()
    errors = ingest.run_threads(post, bodies, clients * len(ports))
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} POSTs failed, first: {errors[0]}")
    return count / elapsed


def measure_queries(ports: list[int], connections: int, seconds: int) -> float:
    """:returns: requests/s of ``/query/trivial``, summed over every node, all loaded at once."""
    rates, errors = [], []

    def load(port):
        try:
            rates.append(wrk(f"http://127.0.0.1:{port}/query/trivial", connections, seconds)["rps"])
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=load, args=(port,)) for port in ports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"wrk failed: {errors[0]}")
    return sum(rates)


def measure(nodes: int = 3, runs: int = 3, count: int = 5000, seconds: int = 3, batch: int = 500,
            clients: int = 2, connections: int = 8, workers: int = 2) -> dict:
    """Run the bench. :returns: ``{"nodes": {k: {"ingest": [ev/s...], "query": [req/s...]}}}``."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is needed (apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="insights-bench-nodes-"))
    processes, ports, results = [], [], {}
    try:
        url = None
        for index in range(1, nodes + 1):
            process, port, data_dir = start_node(work, index, workers, url)
            processes.append(process)
            ports.append(port)
            if url is None:
                url = ingest.store_url(data_dir)  # read, never built: its form may change
            measure_ingest(ports, batch * len(ports), batch, clients, seed=-index)  # warm-up
            wrk(f"http://127.0.0.1:{port}/query/trivial", 1, 1)
            entry = results[index] = {"ingest": [], "query": []}
            for run in range(runs):
                entry["ingest"].append(measure_ingest(ports, count, batch, clients, seed=index * 100 + run))
                entry["query"].append(measure_queries(ports, connections, seconds))
                print(f"  {index} node(s), run {run + 1}: ingest {entry['ingest'][-1]:.0f} ev/s,"
                      f" queries {entry['query'][-1]:.0f} req/s", flush=True)
    finally:
        for process in reversed(processes):
            ingest.stop_process(process)
        shutil.rmtree(work, ignore_errors=True)
    medians = {k: {m: statistics.median(v[m]) for m in ("ingest", "query")} for k, v in results.items()}
    return {"nodes": results, "medians": medians, "events": count, "seconds": seconds,
            "connections": connections, "clients": clients}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=5000, help="events per ingestion run")
    parser.add_argument("--seconds", type=int, default=3, help="seconds of each wrk run")
    parser.add_argument("--clients", type=int, default=2, help="POSTing threads per node")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections per node")
    parser.add_argument("--workers", type=int, default=2, help="web workers per node")
    parser.add_argument("--json", dest="json_path", help="also write the results to this JSON file")
    args = parser.parse_args()
    print(f"nodes benchmark: up to {args.nodes} nodes, runs={args.runs} events={args.events}"
          f" seconds={args.seconds} cpus={os.cpu_count()}", flush=True)
    result = measure(args.nodes, args.runs, args.events, args.seconds, clients=args.clients,
                     connections=args.connections, workers=args.workers)
    one = result["medians"][1]
    print(f"\nmedians of {args.runs} runs")
    print(f"{'nodes':>5} {'ingest ev/s':>12} {'vs 1':>6} {'query req/s':>12} {'vs 1':>6}")
    for k, m in result["medians"].items():
        print(f"{k:5} {m['ingest']:12.0f} {m['ingest'] / one['ingest']:5.2f}x {m['query']:12.0f}"
              f" {m['query'] / one['query']:5.2f}x")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
