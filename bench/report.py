"""One report of every benchmark: a markdown table of Insights against its baseline, side by side.

Runs, one after the other, each as a subprocess with small sizes (each writes
its medians with ``--json``; this script only reads them):

* ``query_roundtrip.py``: a query through hostd vs. the same function in a plain
  Falcon app under gunicorn (p50 at 1 connection, requests/s at 16);
* ``ingest.py``: events/s from ``POST /event`` until three queued handlers are
  done vs. raw ``insert_many`` at the same write concern, journaled (the
  default; vs. ``j=True``) and with ``storage.journal = false`` (``--no-journal``;
  vs. the default write concern); and the realtime ``POST /event`` latency;
* ``many_modules.py``: 50 modules ready and their memory, pre-warmed parent vs.
  fresh interpreters;
* ``property_filter.py``: a handler filtered on an event property vs. on the
  raw field;
* ``nodes.py``: ingestion and query throughput with 2 and 3 nodes on one
  store vs. 1 node.

A benchmark that fails gives a row saying so, and the others still run. The
default sizes take about ten minutes on two cores; ``--quick`` is a smoke run of
a few minutes (figures too small to trust). The table goes to stdout and, with
``--out FILE``, to that file; each benchmark's own output goes to stderr.

    python bench/report.py [--quick] [--out report.md]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: the Insights cell of a benchmark that failed
NOT_MEASURED = "not measured"

__all__ = ["NOT_MEASURED", "Row", "Step", "STEPS", "markdown_table", "run_step", "main"]


@dataclass(frozen=True)
class Row:
    """One line of the report: ``ratio`` is always Insights / baseline (None: no baseline)."""

    bench: str
    measure: str
    insights: str
    baseline: str = "-"
    ratio: float | None = None
    target: str = "-"
    #: whether the target is met (None: no target, or nothing measured)
    met: bool | None = None


def _ratio(ours: float, base: float) -> float | None:
    return ours / base if base else None


def _roundtrip_rows(data: dict) -> list[Row]:
    stack, base = data["stack"], data["baseline"]
    added_us = (stack["p50_c1"] - base["p50_c1"]) * 1e6
    rps_ratio = _ratio(stack["rps_c16"], base["rps_c16"])
    return [Row("query round trip", "p50 latency, 1 connection", f"{stack['p50_c1'] * 1e6:.0f} us",
                f"{base['p50_c1'] * 1e6:.0f} us (Falcon)", _ratio(stack["p50_c1"], base["p50_c1"]),
                "added <= 250 us", added_us <= 250),
            Row("query round trip", "requests/s, 16 connections", f"{stack['rps_c16']:.0f}",
                f"{base['rps_c16']:.0f} (Falcon)", rps_ratio, ">= 0.45x",
                None if rps_ratio is None else rps_ratio >= 0.45)]


def _ingest_rows(data: dict) -> list[Row]:
    journal = data["journal"]
    base = data["ceiling_j"] if journal else data["ceiling"]
    ratio = _ratio(data["ours"], base)
    rows = [Row("ingestion", f"events/s to 3 handlers, {'journaled' if journal else 'storage.journal = false'}",
                f"{data['ours']:.0f}", f"{base:.0f} (insert_many, {'j=True' if journal else 'w=1'})", ratio,
                ">= 0.5x", None if ratio is None else ratio >= 0.5)]
    if data.get("problems"):
        rows.append(Row("ingestion", "handler totals", "; ".join(data["problems"])[:200], met=False))
    realtime = data.get("realtime")
    if realtime:
        answered = realtime["statuses"]
        rows.append(Row("realtime latency", "p50 of POST /event waiting for a realtime handler",
                        f"{realtime['p50'] * 1e3:.2f} ms (p99 {realtime['p99'] * 1e3:.2f} ms)",
                        target="p50 < 10 ms", met=realtime["p50"] < 0.010 and set(answered) == {"200"}))
    return rows


def _many_modules_rows(data: dict, modules: int) -> list[Row]:
    warm, fresh = data["prewarm"], data["fresh"]
    return [Row("many modules", f"{modules} modules ready", f"{warm['ready_s']:.2f} s",
                f"{fresh['ready_s']:.2f} s (fresh interpreters)", _ratio(warm["ready_s"], fresh["ready_s"]),
                "<= 10 s", warm["ready_s"] <= 10),
            Row("many modules", "USS per idle sandbox", f"{warm['uss_mb']:.1f} MB",
                f"{fresh['uss_mb']:.1f} MB (fresh interpreters)", _ratio(warm["uss_mb"], fresh["uss_mb"]),
                "<= 40 MB", warm["uss_mb"] <= 40)]


def _property_rows(data: dict) -> list[Row]:
    return [Row("property filter", f"events/s delivered, filter on {next(iter(data['filters']['property']))}",
                f"{data['property_rate']:.0f}", f"{data['raw_rate']:.0f} (filter on event_type)", data["ratio"],
                ">= 0.5x", data["ratio"] >= 0.5)]


def _nodes_rows(data: dict) -> list[Row]:
    medians = {int(k): v for k, v in data["medians"].items()}
    one = medians[1]
    rows = []
    for measure, unit in (("ingest", "events/s acked"), ("query", "query requests/s")):
        for k in sorted(medians):
            if k > 1:
                rows.append(Row("nodes on one store", f"{unit}, {k} nodes", f"{medians[k][measure]:.0f}",
                                f"{one[measure]:.0f} (1 node)", _ratio(medians[k][measure], one[measure])))
    return rows


@dataclass(frozen=True)
class Step:
    """One benchmark run: its script, its arguments (default and ``--quick``), and its rows."""

    name: str
    script: str
    args: tuple
    quick_args: tuple
    rows: object   # (json data, quick) -> list[Row]


STEPS = (
    Step("query round trip", "query_roundtrip.py", ("--runs", "3", "--seconds", "3"),
         ("--runs", "1", "--seconds", "1"), lambda data, quick: _roundtrip_rows(data)),
    Step("ingestion (journaled) and realtime", "ingest.py",
         ("--runs", "3", "--events", "3000", "--skip-celery", "--rt-requests", "100"),
         ("--runs", "1", "--events", "1000", "--skip-celery", "--rt-requests", "20"),
         lambda data, quick: _ingest_rows(data)),
    Step("ingestion (storage.journal = false)", "ingest.py",
         ("--runs", "3", "--events", "5000", "--skip-celery", "--skip-realtime", "--no-journal"),
         ("--runs", "1", "--events", "1000", "--skip-celery", "--skip-realtime", "--no-journal"),
         lambda data, quick: _ingest_rows(data)),
    Step("many modules", "many_modules.py", ("--modules", "50", "--runs", "1"), ("--modules", "5", "--runs", "1"),
         lambda data, quick: _many_modules_rows(data, 5 if quick else 50)),
    Step("property filter", "property_filter.py", ("--runs", "3", "--events", "6000"),
         ("--runs", "1", "--events", "2000"), lambda data, quick: _property_rows(data)),
    Step("nodes", "nodes.py", ("--runs", "2", "--events", "3000", "--seconds", "3"),
         ("--runs", "1", "--events", "1000", "--seconds", "1"), lambda data, quick: _nodes_rows(data)),
)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[Row]) -> str:
    """:returns: the rows as one markdown table (bench | measure | Insights | baseline | ratio | target | met)."""
    lines = ["| bench | measure | Insights | baseline | ratio | target | met |",
             "| --- | --- | --- | --- | ---: | --- | --- |"]
    for row in rows:
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
        met = {True: "yes", False: "NO", None: "-"}[row.met]
        lines.append("| " + " | ".join(_cell(c) for c in (row.bench, row.measure, row.insights, row.baseline,
                                                            ratio, row.target, met)) + " |")
    return "\n".join(lines) + "\n"


def run_step(step: Step, quick: bool, log=sys.stderr) -> tuple[list[Row], float]:
    """Run one benchmark as a subprocess (its output to ``log``). :returns: its rows and seconds taken;
    a failure is one row saying so."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="insights-report-") as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, str(HERE / step.script), *(step.quick_args if quick else step.args),
                   "--json", str(out)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                                         if p))
        print(f"== {step.name}: {' '.join(command[1:])}", file=log, flush=True)
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - started
        if done.returncode != 0 or not out.exists():
            return [Row(step.name, f"{step.script} failed (exit {done.returncode}; its output is above)",
                        NOT_MEASURED, met=False)], seconds
        try:
            return step.rows(json.loads(out.read_text()), quick), seconds
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
            return [Row(step.name, f"unreadable result of {step.script}: {err!r}", NOT_MEASURED,
                        met=False)], seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, figures not to trust")
    parser.add_argument("--out", help="also write the report (markdown) to this file")
    parser.add_argument("--only", action="append", choices=[s.script[:-3] for s in STEPS],
                        help="run only this benchmark (repeatable)")
    args = parser.parse_args(argv)
    steps = [s for s in STEPS if not args.only or s.script[:-3] in args.only]
    rows, timings, started = [], [], time.perf_counter()
    for step in steps:
        step_rows, seconds = run_step(step, args.quick)
        rows += step_rows
        timings.append(f"{step.name} {seconds:.0f} s")
    total = time.perf_counter() - started
    report = (f"# Insights benchmark report\n\n{datetime.datetime.now().isoformat(timespec='seconds')}, "
              f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
              f"{', --quick (smoke run: sizes too small to trust)' if args.quick else ''}; "
              f"ratio = Insights / baseline, measured side by side.\n\n"
              + markdown_table(rows)
              + f"\nTook {total:.0f} s: {', '.join(timings)}.\n")
    print(report)
    if args.out:
        Path(args.out).write_text(report, encoding="utf-8")
    return 1 if any(row.insights == NOT_MEASURED for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
