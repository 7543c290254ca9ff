"""The fitting function alone: parameters recovered from answers simulated with known ones.

Tolerances were chosen after trying 40 seeds of the 20-item, 1000-learner case
(a ~ log-normal(0, 0.35), b ~ N(0, 1)): there the worst correlation of the
difficulties was 0.979, the worst mean absolute error 0.14 for b and 0.12 for
a, the worst correlation of the discriminations 0.81 (their true spread is
narrow, so their correlation is the noisiest figure).
"""
import numpy
import pytest

from irt_testdata import correlation, load_model

model = load_model()


def _items(rng, count=20):
    return numpy.clip(rng.lognormal(0.0, 0.35, count), 0.35, 3.0), rng.normal(0.0, 1.0, count)


def test_2pl_recovers_difficulty_and_discrimination_of_20_items_from_1000_learners():
    rng = numpy.random.default_rng(2026)
    a, b = _items(rng)
    fit = model.fit_irt(model.simulate_responses(rng, a, b, 1000))
    assert fit.converged and fit.model == "2PL"
    assert correlation(b, fit.difficulty) > 0.95
    assert numpy.abs(b - fit.difficulty).mean() < 0.2
    assert correlation(a, fit.discrimination) > 0.75
    assert numpy.abs(a - fit.discrimination).mean() < 0.2


def test_rasch_shares_one_discrimination_and_finds_it_when_the_items_share_one():
    rng = numpy.random.default_rng(7)
    b = rng.normal(0.0, 1.0, 15)
    fit = model.fit_irt(model.simulate_responses(rng, numpy.full(15, 1.6), b, 1500), model="rasch")
    assert fit.converged
    assert numpy.ptp(fit.discrimination) == 0.0
    assert fit.discrimination[0] == pytest.approx(1.6, abs=0.15)
    assert numpy.abs(b - fit.difficulty).mean() < 0.15


def test_answers_missing_at_random_leave_the_estimates_close():
    rng = numpy.random.default_rng(11)
    a, b = _items(rng)
    answers = model.simulate_responses(rng, a, b, 1500)
    mask = (rng.random(answers.shape) < 0.6).astype(float)
    fit = model.fit_irt(answers, mask)
    assert fit.converged
    assert correlation(b, fit.difficulty) > 0.95
    assert numpy.abs(b - fit.difficulty).mean() < 0.25


def test_missing_answers_are_not_read_as_wrong():
    # The same learners, once with the unanswered cells masked, once with them as zeros:
    # only the first matches the full-data fit.
    rng = numpy.random.default_rng(5)
    a, b = _items(rng, 10)
    answers = model.simulate_responses(rng, a, b, 800)
    mask = numpy.ones_like(answers)
    mask[:400, :5] = 0.0
    masked = model.fit_irt(answers, mask).difficulty
    as_zeros = model.fit_irt(answers * mask).difficulty
    assert numpy.abs(masked[:5] - b[:5]).mean() < 0.3
    assert (as_zeros[:5] > masked[:5]).all()
    assert (as_zeros[:5] - masked[:5]).mean() > 0.5


def test_an_item_everyone_answers_right_still_converges_to_the_easiest():
    rng = numpy.random.default_rng(3)
    a, b = _items(rng, 8)
    answers = model.simulate_responses(rng, a, b, 300)
    answers[:, 0] = 1.0
    fit = model.fit_irt(answers)
    assert fit.converged
    assert numpy.isfinite(fit.difficulty).all() and numpy.isfinite(fit.discrimination).all()
    assert fit.difficulty[0] == fit.difficulty.min()


def test_the_fit_is_deterministic():
    rng = numpy.random.default_rng(1)
    a, b = _items(rng, 6)
    answers = model.simulate_responses(rng, a, b, 200)
    first, second = model.fit_irt(answers), model.fit_irt(answers)
    assert numpy.array_equal(first.difficulty, second.difficulty)
    assert numpy.array_equal(first.discrimination, second.discrimination)


@pytest.mark.parametrize("kwargs, message", [
    ({"answers": numpy.zeros((3, 2)), "model": "3PL"}, "model must be one of"),
    ({"answers": numpy.zeros((3, 2)), "mask": numpy.ones((3, 3))}, "same learners x items"),
    ({"answers": numpy.zeros((3, 0))}, "same learners x items"),
    ({"answers": numpy.zeros(3)}, "same learners x items"),
])
def test_bad_input_is_a_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.fit_irt(**kwargs)
