"""Many modules on one box: start-up time and memory, with and without the pre-warmed parent.

Generates N small modules (each imports numpy and answers a query computed
with it, and counts events), starts ``hostd serve`` on them, and measures the
time from launch until every module is running, then each sandbox's USS and
PSS (psutil). It does that with ``sandbox.prewarm = true`` (forked from the
pre-warmed parent) and ``false`` (a fresh interpreter each), alternating, for
several runs, and prints the medians.

    python bench/many_modules.py [--modules 50] [--runs 3]

Targets (issue 5): 50 modules ready within 10 s; at most 40 MB USS per idle sandbox.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
MODULE = '''"""Bench module {n}."""
import numpy
from sandbox import event_handler, query


@query()
def stats_{n}(size: int = 100):
    """Mean and spread of a little numpy array."""
    values = numpy.arange(size, dtype=float) * {n}
    return {{"mean": float(values.mean()), "std": float(values.std())}}


@event_handler()
def count_{n}(db, events):
    db["counts"].update_one({{"_id": "all"}}, {{"$inc": {{"n": len(events)}}}}, upsert=True)
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_modules(folder: Path, count: int) -> None:
    for n in range(count):
        module = folder / f"bench_{n:03d}"
        module.mkdir(parents=True)
        (module / "__init__.py").write_text(MODULE.format(n=n))


def one_run(modules: Path, prewarm: bool, count: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="insights-many-"))
    config = work / "hostd.toml"
    config.write_text(f"[sandbox]\nprewarm = {'true' if prewarm else 'false'}\n"
                      "[modules]\nreload = false\n")
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", "from hostd.cli import main; main()", "serve",
                                "--config", str(config), "--modules", str(modules), "--data-dir",
                                str(work / "data"), "--port", str(port), "--workers", "2"],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                states = requests.get(f"{url}/modules", timeout=10).json()
                if len(states) == count and all(m["state"] == "running" for m in states.values()):
                    break
            except (requests.RequestException, ValueError):
                pass
            if time.perf_counter() - started > 300:
                raise RuntimeError("modules not ready after 300 s")
            time.sleep(0.05)
        ready = time.perf_counter() - started
        probe = min(7, count - 1)
        assert requests.get(f"{url}/query/stats_{probe}", timeout=10).json()["mean"] == 49.5 * probe
        time.sleep(2)  # idle
        uss, pss = [], []
        for info in states.values():
            memory = psutil.Process(info["pid"]).memory_full_info()
            uss.append(memory.uss / 2**20)
            pss.append(memory.pss / 2**20)
        return {"ready_s": ready, "uss_mb": statistics.median(uss), "pss_mb": statistics.median(pss),
                "uss_total_mb": sum(uss), "pss_total_mb": sum(pss)}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", dest="json_path", help="also write the medians to this JSON file")
    args = parser.parse_args()
    modules = Path(tempfile.mkdtemp(prefix="insights-many-modules-"))
    results = {True: [], False: []}
    try:
        make_modules(modules, args.modules)
        for run in range(args.runs):
            for prewarm in ((True, False) if run % 2 == 0 else (False, True)):
                result = one_run(modules, prewarm, args.modules)
                results[prewarm].append(result)
                print(f"run {run + 1} prewarm={prewarm}: ready {result['ready_s']:.2f} s,"
                      f" USS median {result['uss_mb']:.1f} MB, PSS median {result['pss_mb']:.1f} MB,"
                      f" USS total {result['uss_total_mb']:.0f} MB", flush=True)
    finally:
        shutil.rmtree(modules, ignore_errors=True)

    def median(prewarm, key):
        return statistics.median(r[key] for r in results[prewarm])

    print(f"\n{args.modules} modules, medians of {args.runs} runs")
    print(f"{'':22} {'ready (s)':>10} {'USS/sandbox':>12} {'PSS/sandbox':>12} {'USS total':>10} {'PSS total':>10}")
    for prewarm, label in ((True, "pre-warmed parent"), (False, "fresh interpreters")):
        print(f"{label:22} {median(prewarm, 'ready_s'):10.2f} {median(prewarm, 'uss_mb'):10.1f}MB"
              f" {median(prewarm, 'pss_mb'):10.1f}MB {median(prewarm, 'uss_total_mb'):8.0f}MB"
              f" {median(prewarm, 'pss_total_mb'):8.0f}MB")
    print("targets: ready within 10 s, at most 40 MB USS per idle sandbox")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(
            {label: {key: median(prewarm, key) for key in results[prewarm][0]}
             for prewarm, label in ((True, "prewarm"), (False, "fresh"))}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
