"""bench/report.py's table: rows built from each benchmark's JSON, and the markdown they make.

The whole report starts a dozen hostd processes (minutes), so it is not run here;
``python bench/report.py --quick`` is its smoke run.
"""
import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _report():
    spec = importlib.util.spec_from_file_location("bench_report", BENCH / "report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


report = _report()
STEP = {step.script: step for step in report.STEPS}


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split(" | ")]


def test_every_benchmark_the_report_runs_exists_and_takes_json():
    for step in report.STEPS:
        text = (BENCH / step.script).read_text()
        assert '"--json"' in text, step.script
        for arg in step.args + step.quick_args:
            if arg.startswith("--"):
                assert f'"{arg}"' in text, (step.script, arg)


def test_the_table_has_one_line_per_row_with_the_ratio_and_whether_the_target_is_met():
    rows = [report.Row("ingestion", "events/s | journaled", "1500", "3000 (insert_many)", 0.5, ">= 0.5x", True),
            report.Row("realtime latency", "p50", "12.00 ms", target="p50 < 10 ms", met=False),
            report.Row("nodes on one store", "2 nodes", "900", "1000 (1 node)", 0.9)]
    lines = report.markdown_table(rows).splitlines()
    assert _cells(lines[0]) == ["bench", "measure", "Insights", "baseline", "ratio", "target", "met"]
    assert len(lines) == 2 + len(rows)
    assert _cells(lines[2]) == ["ingestion", "events/s \\| journaled", "1500", "3000 (insert_many)", "0.50x",
                                ">= 0.5x", "yes"]
    assert _cells(lines[3]) == ["realtime latency", "p50", "12.00 ms", "-", "-", "p50 < 10 ms", "NO"]
    assert _cells(lines[4])[4:] == ["0.90x", "-", "-"]


def test_ingestion_rows_compare_at_the_same_write_concern():
    journaled = {"journal": True, "ours": 1000.0, "ceiling": 10000.0, "ceiling_j": 2500.0, "problems": [],
                 "realtime": {"p50": 0.004, "p99": 0.02, "statuses": {"200": 100}}}
    rows = STEP["ingest.py"].rows(journaled, False)
    assert rows[0].ratio == 0.4 and "j=True" in rows[0].baseline and rows[0].met is False
    assert rows[1].bench == "realtime latency" and rows[1].met is True
    plain = {**journaled, "journal": False, "realtime": None}
    rows = report.STEPS[2].rows(plain, False)
    assert len(rows) == 1 and rows[0].ratio == 0.1 and "w=1" in rows[0].baseline


def test_node_rows_are_against_one_node():
    data = {"medians": {"1": {"ingest": 1000.0, "query": 2000.0}, "2": {"ingest": 1500.0, "query": 2000.0},
                        "3": {"ingest": 500.0, "query": 3000.0}}}
    rows = STEP["nodes.py"].rows(data, False)
    assert [(r.measure, r.ratio) for r in rows] == [
        ("events/s acked, 2 nodes", 1.5), ("events/s acked, 3 nodes", 0.5),
        ("query requests/s, 2 nodes", 1.0), ("query requests/s, 3 nodes", 1.5)]


def test_a_failing_benchmark_is_a_row_saying_so(tmp_path):
    failing = report.Step("broken", "no_such_bench.py", (), (), lambda data, quick: [])
    log = open(tmp_path / "log", "w")
    rows, _ = report.run_step(failing, quick=True, log=log)
    log.close()
    assert len(rows) == 1 and rows[0].insights == report.NOT_MEASURED and rows[0].met is False
    assert "no_such_bench.py failed" in rows[0].measure
