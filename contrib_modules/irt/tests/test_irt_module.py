"""The irt module in a real sandbox, fed ``hostd demo`` streams, checked against their truth.

Two comparisons: with the fit of the truth's own first-attempt matrix (the same
numbers are expected: this checks what the module stores and reads back), and
with the item parameters the answers were drawn from (statistical: the
tolerances were set after trying several seeds, see each test).
"""
import re
from pathlib import Path

import numpy
import pytest

from hostd.demo import generate
from irt_testdata import correlation, first_attempts, load_model
from sandbox.errors import BadParameter
from sandbox.testing import ModuleHarness

pytestmark = pytest.mark.timeout(300)

MODULE = Path(__file__).resolve().parents[1]
model = load_model()


def _by_problem(items: list[dict]) -> dict:
    return {item["problem_id"]: item for item in items}


def _send(harness, events, chunk=1000):
    """Send in chunks: one append of thousands of events can outlast the log's answer timeout."""
    for start in range(0, len(events), chunk):
        harness.send_events(events[start:start + chunk])


@pytest.fixture(scope="module")
def small():
    """60 learners over 2 weeks (about 3,800 events), the whole stream sent."""
    demo = generate(seed=7, learners=60, weeks=2)
    with ModuleHarness(MODULE) as harness:
        _send(harness, demo.events)
        yield harness, demo.truth, demo.events


def test_counts_match_the_truth(small):
    harness, truth, _ = small
    items = _by_problem(harness.query("irt_items"))
    attempted = {p: t for p, t in truth["problems"].items() if t["attempted"]}
    assert set(items) == set(attempted)
    for problem, expected in attempted.items():
        assert items[problem]["n_learners"] == expected["attempted"], problem
        assert items[problem]["n_responses"] == expected["attempts"], problem


def test_small_classes_get_the_rasch_model_fitted_on_the_first_attempts(small):
    harness, truth, _ = small
    items = _by_problem(harness.query("irt_items"))
    answers, mask, problems = first_attempts(truth)
    assert answers.shape[0] < 200  # below the 2PL threshold
    expected = model.fit_irt(answers, mask, model="rasch")
    assert {item["model"] for item in items.values()} == {"rasch"}
    numpy.testing.assert_allclose([items[p]["difficulty"] for p in problems], expected.difficulty, atol=1e-9)
    numpy.testing.assert_allclose([items[p]["discrimination"] for p in problems], expected.discrimination, atol=1e-9)


def test_difficulties_follow_the_true_ones(small):
    # About 40 learners per problem: over seeds 0-7 the correlation ranged from 0.75 to 0.97.
    harness, truth, _ = small
    items = harness.query("irt_items")
    assert correlation([truth["problems"][i["problem_id"]]["b"] for i in items],
                       [i["difficulty"] for i in items]) > 0.6
    assert [i["difficulty"] for i in items] == sorted(i["difficulty"] for i in items)


def test_one_problem_answers_as_in_the_list_and_the_model_can_be_chosen(small):
    harness, _, _ = small
    items = harness.query("irt_items")
    assert harness.query("irt", problem_id=items[0]["problem_id"]) == items[0]
    two_pl = harness.query("irt", problem_id=items[0]["problem_id"], model="2pl")
    assert two_pl["model"] == "2PL"
    assert set(two_pl) == {"problem_id", "model", "difficulty", "discrimination", "n_learners", "n_responses"}


def test_a_submission_logged_again_under_another_identity_counts_once(small):
    harness, _, events = small
    before = _by_problem(harness.query("irt_items"))
    checks = [e for e in events if e["event_type"] == "problem_check" and e["event_source"] == "server"][:25]
    result = harness.send_events([{**e, "id": f"relogged-{n}"} for n, e in enumerate(checks)])
    assert result["accepted"] == len(checks)  # new to the event log...
    assert _by_problem(harness.query("irt_items")) == before  # ...but the same submissions


def test_browser_checks_and_malformed_server_checks_are_not_submissions(small):
    harness, _, events = small
    before = _by_problem(harness.query("irt_items"))
    browser = next(e for e in events if e["event_type"] == "problem_check" and e["event_source"] == "browser")
    server = next(e for e in events if e["event_type"] == "problem_check" and e["event_source"] == "server")
    broken = {**server, "id": "no-problem-id", "event": {k: v for k, v in server["event"].items() if k != "problem_id"}}
    harness.send_events([{**browser, "id": "browser-again"}, broken])
    assert _by_problem(harness.query("irt_items")) == before
    assert harness.status()["dead_letters"] == 0


def test_unknown_problem_and_model_are_bad_parameters(small):
    harness, _, _ = small
    with pytest.raises(BadParameter) as excinfo:
        harness.query("irt", problem_id="block-v1:Nobody+X+Y+type@problem+block@0")
    assert excinfo.value.param == "problem_id"
    with pytest.raises(BadParameter) as excinfo:
        harness.query("irt_items", model="3PL")
    assert excinfo.value.param == "model"
    with pytest.raises(BadParameter) as excinfo:
        harness.view("irt_view", model="3PL")
    assert excinfo.value.param == "model"


def test_the_view_draws_a_curve_per_problem(small):
    harness, _, _ = small
    items = harness.query("irt_items")
    page = harness.view("irt_view")
    assert page.count("<svg") == 1
    assert len(re.findall(r"<polyline ", page)) == len(items)
    assert "(rasch)" in page
    assert all(item["problem_id"] in page for item in items)  # in each curve's tooltip


def test_a_larger_class_gets_2pl_parameters_close_to_the_true_ones():
    # 400 learners over 3 weeks; only the problem_check events are sent (browser and
    # server). Over seeds 0-5 the correlation of the difficulties was at least 0.955,
    # their mean absolute error at most 0.22 and that of the discriminations at most
    # 0.29; dropout makes later problems' learners abler than average, which the
    # marginal likelihood only partly corrects.
    demo = generate(seed=3, learners=400, weeks=3)
    checks = [e for e in demo.events if e["event_type"] == "problem_check"]
    with ModuleHarness(MODULE) as harness:
        assert "No problem_check submission yet" in harness.view("irt_view")
        _send(harness, checks)
        items = harness.query("irt_items")
    answers, mask, problems = first_attempts(demo.truth)
    expected = model.fit_irt(answers, mask, model="2PL")
    by_problem = _by_problem(items)
    assert {item["model"] for item in items} == {"2PL"}
    numpy.testing.assert_allclose([by_problem[p]["difficulty"] for p in problems], expected.difficulty, atol=1e-9)
    true_b = [demo.truth["problems"][p]["b"] for p in problems]
    true_a = [demo.truth["problems"][p]["a"] for p in problems]
    assert correlation(true_b, expected.difficulty) > 0.9
    assert numpy.abs(numpy.subtract(true_b, expected.difficulty)).mean() < 0.35
    assert numpy.abs(numpy.subtract(true_a, expected.discrimination)).mean() < 0.4
