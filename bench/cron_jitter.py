"""Cron start jitter: how late ``@cron`` runs start after they are due, with many modules.

Generates N modules, each with a task ``@cron(every=1)`` (due every second; its
body records the run in the module's database), starts ``hostd serve`` on them, and for a while
reads ``/modules`` twice a second, collecting each run's ``last_delay`` (the
time from when the run was due to when it started). Prints p50, p99 and max
over every run seen, and how many runs were skipped (a run still going when
the next was due).

    python bench/cron_jitter.py [--modules 50] [--seconds 30] [--runs 3]
"""
from __future__ import annotations

import argparse
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
MODULE = '''"""Cron bench module {n}."""
import time

from sandbox import cron


@cron(every=1)
def tick_{n}(db):
    """Due every second: note the run."""
    db["ticks"].update_one({{"_id": "last"}}, {{"$set": {{"at": time.time()}}}}, upsert=True)
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_once(modules: int, seconds: float) -> tuple[list[float], int, int]:
    """:returns: (every start delay seen, runs, skips)."""
    tmp = Path(tempfile.mkdtemp(prefix="insights-cronbench-"))
    for n in range(modules):
        (tmp / "modules" / f"cron_{n:03d}").mkdir(parents=True)
        (tmp / "modules" / f"cron_{n:03d}" / "__init__.py").write_text(MODULE.format(n=n))
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", "from hostd.cli import main; main()", "serve",
                                "--modules", str(tmp / "modules"), "--data-dir", str(tmp / "data"),
                                "--port", str(port), "--workers", "2"],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                status = requests.get(base + "/modules", timeout=5).json()
                if sum(m["state"] == "running" for m in status.values()) == modules:
                    break
            except requests.RequestException:
                pass
            if time.time() > deadline or process.poll() is not None:
                raise RuntimeError("the modules did not start")
            time.sleep(0.5)
        seen: dict = {}
        end = time.time() + seconds
        while time.time() < end:
            for name, entry in requests.get(base + "/modules", timeout=10).json().items():
                for task, detail in (entry.get("crons") or {}).items():
                    if detail.get("last_start") and detail.get("last_delay") is not None:
                        seen[(name, task, detail["last_start"])] = detail["last_delay"]
            time.sleep(0.5)
        final = requests.get(base + "/modules", timeout=10).json()
        runs = sum(d["runs"] for m in final.values() for d in (m.get("crons") or {}).values())
        skips = sum(d["skips"] for m in final.values() for d in (m.get("crons") or {}).values())
        return list(seen.values()), runs, skips
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    p50s, p99s = [], []
    for number in range(1, args.runs + 1):
        delays, runs, skips = run_once(args.modules, args.seconds)
        p50, p99 = percentile(delays, 0.5) * 1000, percentile(delays, 0.99) * 1000
        p50s.append(p50)
        p99s.append(p99)
        print(f"run {number}: {len(delays)} starts seen, runs {runs}, skips {skips}: start delay"
              f" p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(delays) * 1000:.1f} ms", flush=True)
    print(f"median over {args.runs} runs: p50 {statistics.median(p50s):.1f} ms,"
          f" p99 {statistics.median(p99s):.1f} ms")


if __name__ == "__main__":
    main()
