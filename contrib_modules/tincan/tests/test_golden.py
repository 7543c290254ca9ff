"""Golden test: tincan against Open edX's own xAPI transformer, on its own fixtures.

For every pair ``current/X.json`` (an Open edX event) → ``expected-xapi/X.json``
(the statement(s) event-routing-backends makes of it), tincan's statements are
compared field by field: verb id, object id, object type (``objectType`` and
``definition.type``), result (score, success, response, completion, extensions),
context activities (parent and grouping ids), timestamp and actor — with the
fixtures' settings (LMS root URL, and the mocked anonymous id every user gets).

The agreement table is printed (``-s`` shows it) and must match the one in
``docs/data_layer.md``; ``INSIGHTS_UPDATE_DOCS=1`` rewrites it there.
"""
import json
import math
from collections import Counter
from pathlib import Path

import pytest

from sandbox.events import Event

from tincan_testdata import (ANONYMOUS_ID, DOC, LMS_ROOT_URL, configured_copy, load_edx_to_xapi,
                             stale_doc_sections)

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT.parent / "shared" / "data"
ERB = DATA / "event-routing-backends"
LOGS = ["edx-analytics-pipeline/user_activity_tracking.log", "edx-analytics-pipeline/video_timeline.log",
        "edx-analytics-pipeline/problem_response_tracking.log", "event-routing-backends/tracking.log"]

if not (ERB / "current").is_dir():
    pytest.skip(f"real test data not found at {ERB} (../shared/data beside the repository)",
                allow_module_level=True)

FIELDS = ("verb", "object id", "object type", "result", "context activities", "timestamp", "actor")
#: (fixture, field) → why tincan knowingly differs from Open edX there. Empty: none.
KNOWN_DIFFERENCES: dict = {}

CURRENT = sorted(p.name for p in (ERB / "current").glob("*.json"))
PAIRS = [name for name in CURRENT if (ERB / "expected-xapi" / name).exists()]
UNPAIRED = [name for name in CURRENT if name not in PAIRS]
e2x = load_edx_to_xapi()
TRANSFORMER = e2x.XapiTransformer(lms_root_url=LMS_ROOT_URL, actor_names={"*": ANONYMOUS_ID})


def _load(folder: str, name: str):
    return json.loads((ERB / folder / name).read_text(encoding="utf-8"))


def _expected(name: str) -> list:
    found = _load("expected-xapi", name)
    return found if isinstance(found, list) else [found]


def _same(a, b) -> bool:
    """Equal as JSON values, numbers compared as numbers (1 == 1.0, 2/3 to 1e-9)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _activity_ids(statement, kind):
    found = (statement.get("context") or {}).get("contextActivities", {}).get(kind, [])
    return [a.get("id") for a in found]


def _view(statement, field):
    """The part of a statement that ``field`` compares."""
    target = statement.get("object") or {}
    return {
        "verb": (statement.get("verb") or {}).get("id"),
        "object id": target.get("id"),
        "object type": (target.get("objectType", "Activity"), (target.get("definition") or {}).get("type")),
        "result": statement.get("result"),
        "context activities": (_activity_ids(statement, "parent"), _activity_ids(statement, "grouping")),
        "timestamp": statement.get("timestamp"),
        "actor": statement.get("actor"),
    }[field]


def compare(name: str) -> dict:
    """:returns: ``{field: [disagreements]}`` between tincan and Open edX for one fixture."""
    ours, expected = TRANSFORMER.statements(_load("current", name)), _expected(name)
    by_object = {s["object"].get("id"): s for s in ours}
    differences = {field: [] for field in FIELDS}
    if len(ours) != len(expected):
        differences["object id"].append(f"{len(ours)} statements, Open edX makes {len(expected)}")
    for index, want in enumerate(expected):
        got = by_object.get(want["object"].get("id")) or (ours[index] if index < len(ours) else {})
        for field in FIELDS:
            if not _same(_view(got, field), _view(want, field)):
                differences[field].append(f"statement {index}: tincan {_view(got, field)!r},"
                                          f" Open edX {_view(want, field)!r}")
    return differences


def _event_type(name: str) -> str:
    raw = _load("current", name)
    return raw.get("name") or raw.get("event_type")


# -- the tables -----------------------------------------------------------------

def golden_table() -> str:
    lines = ["| fixture | event type | statements | " + " | ".join(FIELDS) + " |",
             "|---|---|---|" + "---|" * len(FIELDS)]
    agreeing = 0
    for name in PAIRS:
        differences = compare(name)
        cells = []
        for field in FIELDS:
            if (name, field) in KNOWN_DIFFERENCES:
                cells.append("known difference")
            else:
                cells.append("✗" if differences[field] else "✓")
        agreeing += all(cell == "✓" for cell in cells)
        lines.append(f"| `{name[:-5]}` | `{_event_type(name)}` | {len(_expected(name))} | " + " | ".join(cells) + " |")
    for name in UNPAIRED:
        ours = TRANSFORMER.statements(_load("current", name))
        verb = ours[0]["verb"]["id"].rsplit("/", 1)[1] if ours else "not mapped"
        lines.append(f"| `{name[:-5]}` | `{_event_type(name)}` | — | no expected statement in Open edX's"
                     f" fixtures; tincan says *{verb}* |" + " |" * (len(FIELDS) - 1))
    summary = (f"{agreeing} of {len(PAIRS)} fixture pairs agree on every field; "
               f"{len(UNPAIRED)} inputs have no expected statement; known differences: {len(KNOWN_DIFFERENCES)}.")
    return summary + "\n\n" + "\n".join(lines)


def mapping_table() -> str:
    covered = Counter(_event_type(name) for name in PAIRS)
    lines = ["| edX event type | xAPI verb | follows | golden fixtures |", "|---|---|---|---|"]
    for row in e2x.mapping_table():
        lines.append(f"| `{row['event_type']}` | `{row['verb']}` | {row['follows']} |"
                     f" {covered.get(row['event_type'], 0) or '—'} |")
    return "\n".join(lines)


def _log_events(path: Path):
    for line in path.read_text(encoding="utf-8").splitlines():
        start = line.find("{")
        if start < 0 or line.lstrip().startswith("#"):
            continue
        try:
            event = json.loads(line[start:])
        except ValueError:
            continue  # the deliberately malformed lines of tracking.log
        if isinstance(event, dict):
            yield event


def real_logs_table() -> str:
    counts, verbs = Counter(), {}
    for log in LOGS:
        for event in _log_events(DATA / log):
            kind = event.get("event_type")
            kind = "(server page view: a URL path)" if isinstance(kind, str) and kind.startswith("/") else kind
            counts[kind] += 1
            statements = TRANSFORMER.statements(event)
            verbs.setdefault(kind, statements[0]["verb"]["id"].rsplit("/", 1)[1] if statements else None)
    lines = ["| event type in the shared tracking logs | events | tincan |", "|---|---|---|"]
    for kind, count in sorted(counts.items(), key=lambda item: (-item[1], str(item[0]))):
        lines.append(f"| `{kind}` | {count} | {('*' + verbs[kind] + '*') if verbs[kind] else '**not mapped**'} |")
    return "\n".join(lines)


SECTIONS = {"golden-table": golden_table, "mapping-table": mapping_table, "real-logs-table": real_logs_table}


# -- tests ----------------------------------------------------------------------

@pytest.mark.parametrize("name", PAIRS)
def test_tincan_agrees_with_open_edx(name):
    differences = compare(name)
    wrong = {field: found for field, found in differences.items()
             if found and (name, field) not in KNOWN_DIFFERENCES}
    assert not wrong, f"{name}: {json.dumps(wrong, indent=1)}"
    still_known = [field for (fixture, field) in KNOWN_DIFFERENCES if fixture == name and differences[field]]
    assert len(still_known) == sum(1 for fixture, _ in KNOWN_DIFFERENCES if fixture == name), \
        f"{name}: a known difference disappeared; update KNOWN_DIFFERENCES and the docs"


@pytest.mark.parametrize("name", UNPAIRED)
def test_inputs_without_expected_statements_still_transform(name):
    ours = TRANSFORMER.statements(_load("current", name))
    assert ours and all(s["verb"]["id"] and s["actor"]["account"]["name"] == ANONYMOUS_ID for s in ours)


def test_every_pair_is_compared():
    assert len(PAIRS) >= 70 and len(PAIRS) + len(UNPAIRED) == len(CURRENT)


def test_registry_gives_the_same_statements_as_the_transformer(tmp_path):
    from sandbox.properties import build_registry
    folder = configured_copy(tmp_path)  # module.toml carries the fixtures' settings
    registry = build_registry({"tincan": folder / "properties.py"}, entry_points=False)
    for name in CURRENT:
        raw = _load("current", name)
        event = Event(raw, {"id": name}, properties=registry)
        assert event.tincan.statements == TRANSFORMER.statements(raw), name
        assert event.tincan.statement == event.tincan.statements[0]
        assert event.tincan.verb == event.tincan.statement["verb"]
        assert event.tincan.actor["account"] == {"homePage": LMS_ROOT_URL, "name": ANONYMOUS_ID}


def test_the_agreement_table(capsys):
    tables = {section: build() for section, build in SECTIONS.items()}
    with capsys.disabled():
        print("\n\n## tincan vs Open edX (event-routing-backends fixtures)\n")
        print(tables["golden-table"])
        print("\n## edX event types tincan maps\n")
        print(tables["mapping-table"])
        print("\n## Event types in the shared tracking logs\n")
        print(tables["real-logs-table"])
    assert "✗" not in tables["golden-table"]


def test_docs_show_the_current_tables():
    stale = stale_doc_sections({section: build() for section, build in SECTIONS.items()})
    assert not stale, (f"{DOC} does not show the current {', '.join(stale)}: rerun with"
                       " INSIGHTS_UPDATE_DOCS=1 to rewrite those sections")
