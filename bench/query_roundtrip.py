"""Query round trip: the whole stack vs. the same function in-process.

Starts ``hostd serve`` with one trivial module, and a plain Falcon app calling
the same function under the same gunicorn settings; then, several times and
alternating which goes first, measures with ``wrk``:

* latency p50/p99 at one connection,
* requests/s at 16 connections,

and prints the medians, the added p50 (stack - baseline) and the throughput
ratio (stack / baseline). Needs ``wrk`` (Debian package ``wrk``).

    python bench/query_roundtrip.py [--runs 5] [--seconds 5] [--workers 4]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def wrk(url: str, connections: int, seconds: int, headers=()) -> dict:
    """:returns: ``{"p50", "p99"}`` in seconds and ``{"rps"}`` from one wrk run.

    :param headers: ``"Name: value"`` headers sent with each request.
    """
    extra = [arg for header in headers for arg in ("-H", header)]
    out = subprocess.run(["wrk", "-t", str(min(2, connections)), "-c", str(connections),
                          "-d", f"{seconds}s", "--latency", *extra, url],
                         check=True, capture_output=True, text=True).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "99"):
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        result[f"p{pct}"] = float(value) * _UNITS[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} failed requests against {url}")
    return result


def start_stack(port: int, workers: int, data_dir: str) -> subprocess.Popen:
    command = [sys.executable, "-c", "from hostd.cli import main; main()", "serve",
               "--modules", str(HERE / "modules"), "--data-dir", data_dir,
               "--port", str(port), "--workers", str(workers)]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_baseline(port: int, workers: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers",
               str(workers), "--worker-class", "sync", "--log-level", "warning", "baseline_app:application"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]))
    return subprocess.Popen(command, cwd=HERE, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def alternate(cases: dict, runs: int, seconds: int) -> dict:
    """Measure each case with wrk at 1 and at 16 connections, ``runs`` times, alternating
    which goes first (so slow drifts of the machine hit them alike).

    :param cases: ``{name: (url, headers)}``.
    :returns: ``{name: {"c1": [wrk result...], "c16": [...]}}``.
    """
    results = {name: {"c1": [], "c16": []} for name in cases}
    for url, headers in cases.values():
        wrk(url, 1, 1, headers)  # warm up
    for run in range(runs):
        for name in (list(cases) if run % 2 == 0 else list(reversed(cases))):
            url, headers = cases[name]
            results[name]["c1"].append(wrk(url, 1, seconds, headers))
            results[name]["c16"].append(wrk(url, 16, seconds, headers))
    return results


def median(results: dict, name: str, key: str, field: str) -> float:
    """:returns: the median of ``field`` (``p50``, ``p99``, ``rps``) of case ``name`` at ``key``."""
    return statistics.median(r[field] for r in results[name][key])


def print_table(results: dict) -> None:
    """Print each case's medians: p50 and p99 at 1 connection, requests/s at 1 and 16."""
    print(f"{'':10} {'p50 c=1':>10} {'p99 c=1':>10} {'req/s c=1':>10} {'req/s c=16':>11}")
    for name in results:
        print(f"{name:10} {median(results, name, 'c1', 'p50') * 1e6:8.0f}us"
              f" {median(results, name, 'c1', 'p99') * 1e6:8.0f}us"
              f" {median(results, name, 'c1', 'rps'):10.0f} {median(results, name, 'c16', 'rps'):11.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4, help="web workers of both (hostd's default: 4)")
    parser.add_argument("--json", dest="json_path", help="also write the medians to this JSON file")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed (apt-get install wrk)", file=sys.stderr)
        return 2
    data_dir = tempfile.mkdtemp(prefix="insights-bench-")
    stack_port, base_port = free_port(), free_port()
    stack = start_stack(stack_port, args.workers, data_dir)
    baseline = start_baseline(base_port, args.workers)
    urls = {"stack": f"http://127.0.0.1:{stack_port}/query/trivial",
            "baseline": f"http://127.0.0.1:{base_port}/query/trivial"}
    try:
        for url in urls.values():
            wait_for(url)
        results = alternate({name: (url, ()) for name, url in urls.items()}, args.runs, args.seconds)
    finally:
        for process in (stack, baseline):
            process.send_signal(signal.SIGTERM)
        for process in (stack, baseline):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(data_dir, ignore_errors=True)

    print(f"runs={args.runs} seconds={args.seconds} workers={args.workers} (medians)")
    print_table(results)
    added = (median(results, "stack", "c1", "p50") - median(results, "baseline", "c1", "p50")) * 1e6
    ratio = median(results, "stack", "c16", "rps") / median(results, "baseline", "c16", "rps")
    print(f"added p50 at 1 connection: {added:.0f} us (target <= 250 us)")
    print(f"throughput ratio at 16 connections: {ratio:.2f}x (target >= 0.45x)")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(
            {name: {"p50_c1": median(results, name, "c1", "p50"), "p99_c1": median(results, name, "c1", "p99"),
                    "rps_c1": median(results, name, "c1", "rps"), "rps_c16": median(results, name, "c16", "rps")}
             for name in results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
