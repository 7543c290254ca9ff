"""A memoized query served from the cache vs. a trivial query, both through HTTP.

Starts ``hostd serve`` with one module holding both queries, computes the
memoized one once (the time it takes is printed), then, several times and
alternating which goes first, measures each with ``wrk``: latency p50 at one
connection and requests/s at 16. Prints the medians and the ratios
(memoized / trivial): what reading a result from the module's store costs
over answering a constant. Needs ``wrk`` (Debian package ``wrk``).

    python bench/memoize.py [--runs 5] [--seconds 5] [--workers 4]
"""
from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from query_roundtrip import alternate, free_port, median, print_table, wait_for

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def start_stack(port: int, workers: int, data_dir: str) -> subprocess.Popen:
    command = [sys.executable, "-c", "from hostd.cli import main; main()", "serve",
               "--modules", str(HERE / "memo_modules"), "--data-dir", data_dir,
               "--port", str(port), "--workers", str(workers)]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4, help="hostd's web workers (default: 4)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed (apt-get install wrk)", file=sys.stderr)
        return 2
    data_dir = tempfile.mkdtemp(prefix="insights-bench-")
    port = free_port()
    stack = start_stack(port, args.workers, data_dir)
    urls = {"trivial": f"http://127.0.0.1:{port}/query/trivial",
            "memoized": f"http://127.0.0.1:{port}/query/heavy"}
    results = {name: {"c1": [], "c16": []} for name in urls}
    try:
        wait_for(urls["trivial"])
        started = time.perf_counter()
        with urllib.request.urlopen(urls["memoized"], timeout=60) as answer:
            answer.read()
        computed = time.perf_counter() - started
        results = alternate({name: (url, ()) for name, url in urls.items()}, args.runs, args.seconds)
    finally:
        stack.send_signal(signal.SIGTERM)
        try:
            stack.wait(30)
        except subprocess.TimeoutExpired:
            stack.kill()
        shutil.rmtree(data_dir, ignore_errors=True)

    print(f"runs={args.runs} seconds={args.seconds} workers={args.workers} (medians)")
    print(f"first call of the memoized query (computing it): {computed * 1e3:.0f} ms")
    print_table(results)
    latency = median(results, "memoized", "c1", "p50") / median(results, "trivial", "c1", "p50")
    throughput = median(results, "memoized", "c16", "rps") / median(results, "trivial", "c16", "rps")
    print(f"memoized / trivial: p50 at 1 connection {latency:.2f}x, requests/s at 16 connections {throughput:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
