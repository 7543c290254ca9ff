"""What confinement costs a sandbox: start time (spawn to ready) and memory (USS).

Starts one sandbox at a time through hostd's own :class:`~hostd.launcher.Launcher`
(the module imports numpy), with each ``sandbox.isolation`` mode in turn,
interleaved, and times it from the launch until its signed ``ready`` message
arrives on the upcall socket; then reads its USS (psutil) and stops it. Modes:
``off`` (rlimits only), ``user`` (user namespace, private mounts, Landlock,
seccomp: what a non-root hostd gets), and, as root, ``root`` (the same with a uid
of its own instead of a user namespace; no cgroups here). Fresh interpreters
(``--prewarm`` for sandboxes forked from the pre-warmed parent).

    python bench/confinement_cost.py [--runs 15] [--prewarm]

Prints the medians and each mode's ratio to ``off``. No store is needed: the
module never touches its database.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hostd.config import load_config  # noqa: E402
from hostd.forkclient import ForkServer  # noqa: E402
from hostd.isolation import Isolation  # noqa: E402
from hostd.launcher import Launcher, sandbox_environment  # noqa: E402
from hostd.paths import HostPaths  # noqa: E402
from sandbox import protocol  # noqa: E402

MODULE = '''"""Bench module."""
import numpy
from sandbox import query


@query()
def mean(size: int = 100):
    return float(numpy.arange(size, dtype=float).mean())
'''
STORE_URL = "mongodb://127.0.0.1:9"  # never connected to


def one_start(work: Path, modules: Path, mode: str, prewarm: bool) -> dict:
    """Launch the bench module's sandbox once in ``mode``; :returns: ``{"ready_ms", "uss_mb", "enforced"}``."""
    data = work / f"data-{mode}"
    paths = HostPaths(data)
    paths.make()
    settings = load_config(overrides={"storage.data_dir": str(data), "modules.paths": [str(modules)],
                                      "sandbox.isolation": "user" if mode == "user" else
                                      "off" if mode == "off" else "auto"})
    isolation = Isolation(paths, settings, STORE_URL, mode) if mode != "off" else None
    forkserver = ForkServer(paths.ipc / "forkserver.sock", sandbox_environment()) if prewarm else None
    key = os.urandom(32)
    launcher = Launcher(paths, settings, STORE_URL, isolation=isolation, forkserver=forkserver)
    context = zmq.Context()
    upcalls = context.socket(zmq.ROUTER)
    signer = protocol.Signer(key)
    sandbox = None
    try:
        paths.module_ipc("bench").mkdir(mode=0o700, parents=True, exist_ok=True)
        upcalls.bind(launcher.upcall_endpoint("bench"))
        if isolation is not None and mode == "root":
            os.chown(launcher.upcall_endpoint("bench")[len("ipc://"):], isolation.uid("bench"), -1)
        started = time.perf_counter()
        sandbox = launcher.launch("bench", modules / "bench", settings.limits(), key, os.urandom(32))
        while True:
            if not upcalls.poll(30000):
                raise RuntimeError(f"no ready message in 30 s ({mode}); see {paths.logs / 'bench.log'}:\n"
                                   + (paths.logs / "bench.log").read_text(errors="replace")[-3000:])
            _, body = protocol.split_envelope(upcalls.recv_multipart())
            message = signer.unpack(body)
            if message.get("type") == "ready":
                break
            if message.get("type") == "load_failed":
                raise RuntimeError(message.get("traceback"))
        ready_ms = (time.perf_counter() - started) * 1000
        time.sleep(0.5)  # settled
        uss = psutil.Process(message["pid"]).memory_full_info().uss / 2**20
        return {"ready_ms": ready_ms, "uss_mb": uss, "enforced": message.get("confinement") or {}}
    finally:
        if sandbox is not None:
            sandbox.kill()
        upcalls.close(0)
        context.term()
        if forkserver is not None:
            forkserver.stop()
        if isolation is not None:
            isolation.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--prewarm", action="store_true", help="fork sandboxes from the pre-warmed parent")
    args = parser.parse_args()
    modes = ["off", "user"] + (["root"] if os.geteuid() == 0 else [])
    work = Path(tempfile.mkdtemp(prefix="insights-confine-bench-"))
    os.chmod(work, 0o755)
    modules = work / "modules"
    (modules / "bench").mkdir(parents=True)
    (modules / "bench" / "__init__.py").write_text(MODULE)
    results: dict = {mode: [] for mode in modes}
    try:
        for run in range(args.runs):
            for mode in (modes if run % 2 == 0 else modes[::-1]):
                result = one_start(work, modules, mode, args.prewarm)
                results[mode].append(result)
                print(f"run {run + 1} {mode:4}: ready {result['ready_ms']:6.1f} ms, USS {result['uss_mb']:5.1f} MB",
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base_ready = statistics.median(r["ready_ms"] for r in results["off"])
    base_uss = statistics.median(r["uss_mb"] for r in results["off"])
    print(f"\n{'fork server' if args.prewarm else 'fresh interpreters'}, medians of {args.runs} starts")
    print(f"{'mode':6} {'ready (ms)':>11} {'ratio':>6} {'USS (MB)':>9} {'ratio':>6}  layers")
    for mode in modes:
        ready = statistics.median(r["ready_ms"] for r in results[mode])
        uss = statistics.median(r["uss_mb"] for r in results[mode])
        layers = ", ".join(sorted(results[mode][-1]["enforced"]))
        print(f"{mode:6} {ready:11.1f} {ready / base_ready:6.2f} {uss:9.1f} {uss / base_uss:6.2f}  {layers}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
