"""What scraping ``/metrics`` costs ingestion: events/s with a Prometheus-like scraper vs. without.

Starts ``hostd serve`` (embedded store) with the three modules of
``bench/ingest_modules/`` and measures, as ``bench/ingest.py`` does (its
helpers), events POSTed to ``/event`` in batches by ``--clients`` threads until
the queued handler of each of the three modules has handled them all. Each run
measures both ways, alternating which goes first:

* **with scraper**: a thread GETs ``/metrics`` every ``--interval`` seconds
  (0.5 s: far more often than a Prometheus server would, 15 s to 1 min) for the
  whole measurement, each scrape on a fresh connection as Prometheus over
  ``Connection: close`` would; its scrapes are timed and their status checked;
* **without**: the same, no scraper.

Prints each run's rates, the medians and their ratio (with / without), the
scrapes taken and their median time. The handlers' own totals are checked
against the events sent at the end. A run of the defaults takes about a minute
or two on a 2-core machine; the figures are noisy when other work runs there.

    python bench/metrics_cost.py [--runs 5] [--events 10000] [--interval 0.5]
"""
from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

import pymongo

from ingest import (HERE, INGEST_MODULES, check_totals, free_port, make_events, measure_ours, start_hostd,
                    stop_process, store_url, wait_modules)


class Scraper(threading.Thread):
    """GETs ``/metrics`` every ``interval_s`` until stopped, timing each scrape.

    :param port: hostd's HTTP port.
    :param interval_s: time from the start of one scrape to the start of the next.
    """

    def __init__(self, port: int, interval_s: float):
        super().__init__(daemon=True)
        self._port = port
        self._interval_s = interval_s
        self._halt = threading.Event()
        self.seconds: list[float] = []
        self.failures: list[str] = []

    def run(self) -> None:
        next_at = time.perf_counter()
        while not self._halt.is_set():
            started = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=30)
            try:
                conn.request("GET", "/metrics")
                answer = conn.getresponse()
                body = answer.read()
                if answer.status != 200 or b"insights_http_requests_total" not in body:
                    self.failures.append(f"status {answer.status}")
                else:
                    self.seconds.append(time.perf_counter() - started)
            except OSError as err:
                self.failures.append(str(err))
            finally:
                conn.close()
            next_at += self._interval_s
            self._halt.wait(max(0.0, next_at - time.perf_counter()))

    def stop(self) -> None:
        """Stop after the scrape in hand, and wait for the thread."""
        self._halt.set()
        self.join(60)


def measure(port, client, events, args, scrape: bool) -> dict:
    """One measurement of ``bench/ingest.py``'s kind, with a scraper running or not.

    :returns: its result, with ``scrapes`` (seconds of each) and ``scrape_failures`` when scraped.
    """
    scraper = Scraper(port, args.interval) if scrape else None
    if scraper is not None:
        scraper.start()
    try:
        result = measure_ours(port, client, events, args.batch, args.clients, max(180, len(events) / 100))
    finally:
        if scraper is not None:
            scraper.stop()
    if scraper is not None:
        result.update(scrapes=scraper.seconds, scrape_failures=scraper.failures)
    return result


def median_ms(seconds: list[float]) -> str:
    """:returns: the median of ``seconds`` in milliseconds, as text (``-`` for none)."""
    return f"{statistics.median(seconds) * 1000:.1f} ms" if seconds else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--events", type=int, default=10000, help="events per measurement")
    parser.add_argument("--batch", type=int, default=500, help="events per POST")
    parser.add_argument("--clients", type=int, default=3, help="concurrent client threads")
    parser.add_argument("--users", type=int, default=300, help="distinct usernames in the events")
    parser.add_argument("--workers", type=int, default=4, help="hostd web workers")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between scrapes")
    args = parser.parse_args()
    print(f"/metrics cost: runs={args.runs} events={args.events} batch={args.batch} clients={args.clients}"
          f" workers={args.workers} interval={args.interval:g}s cpus={os.cpu_count()}", flush=True)

    data_dir = tempfile.mkdtemp(prefix="insights-bench-metrics-")
    port = free_port()
    hostd = client = None
    scraped, plain, problems = [], [], []
    try:
        hostd = start_hostd(HERE / "ingest_modules", data_dir, port, args.workers)
        wait_modules(port, INGEST_MODULES, hostd, data_dir)
        client = pymongo.MongoClient(store_url(data_dir), serverSelectionTimeoutMS=10000)
        warm = make_events(2 * args.batch, args.users, seed=-2)  # every path once, both ways
        measure(port, client, warm[:args.batch], args, scrape=True)
        measure(port, client, warm[args.batch:], args, scrape=False)
        sent = len(warm)
        for run in range(args.runs):
            order = (True, False) if run % 2 == 0 else (False, True)
            for scrape in order:
                events = make_events(args.events, args.users, seed=2 * run + scrape)
                (scraped if scrape else plain).append(measure(port, client, events, args, scrape))
                sent += len(events)
            problems += check_totals(port, sent)
            with_, without = scraped[-1], plain[-1]
            print(f"  run {run + 1}: with scraper {with_['rate']:.0f} ev/s ({len(with_['scrapes'])} scrapes,"
                  f" median {median_ms(with_['scrapes'])}), without {without['rate']:.0f} ev/s", flush=True)
    finally:
        if client is not None:
            client.close()
        stop_process(hostd)
        shutil.rmtree(data_dir, ignore_errors=True)

    with_rate = statistics.median(r["rate"] for r in scraped)
    without_rate = statistics.median(r["rate"] for r in plain)
    scrapes = [s for r in scraped for s in r["scrapes"]]
    failures = [f for r in scraped for f in r["scrape_failures"]]
    print()
    print(f"medians of {args.runs} runs; events={args.events} batch={args.batch} clients={args.clients}"
          f" workers={args.workers}")
    print(f"{'':34} {'median':>9}  {'unit':8} runs")
    for label, runs in (("POST /event -> 3 handlers, scraped", scraped), ("same, no scraper", plain)):
        rates = [r["rate"] for r in runs]
        print(f"{label:34} {statistics.median(rates):9.0f}  events/s {' '.join(f'{v:.0f}' for v in rates)}")
    print(f"ratio with / without scraper: {with_rate / without_rate:.3f}")
    print(f"scrapes: {len(scrapes)}, median {median_ms(scrapes)}, max {median_ms([max(scrapes, default=0)])};"
          f" failed: {len(failures)}")
    for problem in problems + failures[:5]:
        print(f"PROBLEM: {problem}")
    return 1 if problems or failures else 0


if __name__ == "__main__":
    sys.exit(main())
