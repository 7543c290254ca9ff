"""What a token costs: a trivial query with a valid token vs. the same query without one.

Starts one ``hostd serve`` on loopback (``auth.required = "auto"``: no token
needed there) whose configuration holds a token with a policy (``allow``,
``deny`` and a fixed parameter, so the whole path runs: hashing and comparing
the token, the scope, the name check, forcing the parameter). Then, several
times and alternating which goes first, measures ``/query/trivial`` with
``wrk``, with ``-H "Authorization: Bearer ..."`` and without: latency p50 at one
connection and requests/s at 16. Prints the medians and the ratios
(with token / without), and the median of each run's own ratio. Needs ``wrk`` (Debian package ``wrk``).

    python bench/auth.py [--runs 5] [--seconds 5] [--workers 4] [--tokens 20]
"""
from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import timeit
import urllib.error
import urllib.request
from pathlib import Path

from query_roundtrip import alternate, free_port, median, print_table, wait_for

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from hostd.auth import Authenticator  # noqa: E402  (the bench runs from a checkout)
from hostd.config import load_config  # noqa: E402
from hostd.tokens import new_token  # noqa: E402


def write_config(folder: str, tokens: int) -> tuple[Path, str]:
    """A configuration with ``tokens`` tokens; :returns: its path and the token measured (the last:
        every configured hash is compared anyway)."""
    blocks, secret = [], ""
    for index in range(tokens):
        secret, block = new_token(f"reader-{index}", ["queries"], allow=["trivial", "other"], deny=["admin_only"],
                                  fix={"course": "6.002x"})
        blocks.append(block)
    path = Path(folder, "hostd.toml")
    path.write_text('[auth]\nrequired = "auto"\n\n' + "\n".join(blocks), encoding="utf-8")
    return path, secret


def identify_cost(config: Path, token: str, number: int = 20000) -> float:
    """:returns: seconds a web worker spends finding a token among the configured ones (in-process)."""
    authenticator = Authenticator(load_config(config))
    return min(timeit.repeat(lambda: authenticator.identify(token), number=number, repeat=5)) / number


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4, help="hostd's web workers (default: 4)")
    parser.add_argument("--tokens", type=int, default=20, help="tokens in the configuration (default: 20)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed (apt-get install wrk)", file=sys.stderr)
        return 2
    folder = tempfile.mkdtemp(prefix="insights-bench-")
    config, token = write_config(folder, args.tokens)
    identify_s = identify_cost(config, token)
    port = free_port()
    command = [sys.executable, "-c", "from hostd.cli import main; main()", "serve", "--config", str(config),
               "--modules", str(HERE / "modules"), "--data-dir", str(Path(folder, "data")),
               "--port", str(port), "--workers", str(args.workers)]
    stack = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/query/trivial"
    cases = {"no token": (), "token": (f"Authorization: Bearer {token}",)}
    try:
        wait_for(url)
        refused = urllib.request.Request(url, headers={"Authorization": f"Bearer {secrets.token_urlsafe(32)}"})
        try:
            urllib.request.urlopen(refused, timeout=10)
            raise RuntimeError("an unknown token was accepted: the bench would not measure auth")
        except urllib.error.HTTPError as err:
            assert err.code == 401, err.code
        results = alternate({name: (url, headers) for name, headers in cases.items()}, args.runs, args.seconds)
    finally:
        stack.send_signal(signal.SIGTERM)
        try:
            stack.wait(30)
        except subprocess.TimeoutExpired:
            stack.kill()
        shutil.rmtree(folder, ignore_errors=True)

    print(f"runs={args.runs} seconds={args.seconds} workers={args.workers} tokens={args.tokens} (medians)")
    print_table(results)
    latency = median(results, "token", "c1", "p50") / median(results, "no token", "c1", "p50")
    throughput = median(results, "token", "c16", "rps") / median(results, "no token", "c16", "rps")
    print(f"token / no token: p50 at 1 connection {latency:.2f}x, requests/s at 16 connections {throughput:.2f}x")
    # Each run measured both back to back: the median of their ratios cancels slow drifts of
    # the machine's other load, which the ratio of medians does not.
    paired = statistics.median(t["rps"] / n["rps"] for t, n in zip(results["token"]["c16"], results["no token"]["c16"]))
    print(f"median of the runs' own ratios, requests/s at 16 connections: {paired:.2f}x")
    print(f"identifying the token among {args.tokens} (in-process): {identify_s * 1e6:.1f}us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
