"""Item response models fitted with numpy: 2PL and Rasch by marginal maximum likelihood.

The model: learner ``n`` answers item ``j`` right with probability
``P = 1 / (1 + exp(-a_j (theta_n - b_j)))``, abilities ``theta ~ N(0, 1)``.

The fit is Bock and Aitkin's EM for the marginal likelihood, with abilities
integrated out by Gauss-Hermite quadrature (:data:`NODES` nodes of the standard
normal). The E-step gives, at each node, the expected number of learners who
answered each item and the expected number who answered it right; the M-step
maximises, item by item, the expected log-likelihood plus log-priors by Fisher
scoring in the slope-intercept form ``logit P = a theta + c`` with ``a =
exp(alpha)``. A missing answer (a learner who never tried an item) is left out
of that learner's likelihood, which is correct when whether one tries does not
depend on the answer one would give.

Identification: fixing the ability distribution to N(0, 1) fixes the origin and
the unit of the scale; ``a = exp(alpha) > 0`` fixes its direction. Regularisation,
so items everyone (or no one) answers right still converge: ``alpha ~ N(0,
0.5^2)`` (a log-normal prior on ``a``) and ``c ~ N(0, 3^2)``; they are weak
next to the data for items answered by a few hundred learners.

The Rasch model ("rasch") is the same with one discrimination shared by all
items (equivalently slopes of 1 and an ability variance to estimate); it needs
fewer answers and is the safer choice for small classes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy

__all__ = ["ItemFit", "fit_irt", "simulate_responses", "NODES", "MODELS"]

NODES = 41
MODELS = ("2PL", "rasch")
_ALPHA_SD = 0.5
_C_SD = 3.0
_STEP_MAX = 1.0


@dataclass(frozen=True)
class ItemFit:
    """What :func:`fit_irt` found.

    :param model: ``"2PL"`` or ``"rasch"``.
    :param difficulty: ``b`` per item.
    :param discrimination: ``a`` per item (all equal for Rasch).
    :param iterations: EM iterations run.
    :param converged: whether the largest parameter change fell below the tolerance.
    :param log_likelihood: the marginal log-likelihood at the end (without priors).
    """

    model: str
    difficulty: numpy.ndarray
    discrimination: numpy.ndarray
    iterations: int
    converged: bool
    log_likelihood: float


def _quadrature() -> tuple[numpy.ndarray, numpy.ndarray]:
    nodes, weights = numpy.polynomial.hermite_e.hermegauss(NODES)
    return nodes, weights / weights.sum()


def _e_step(answers, mask, alpha, c, nodes, log_weights):
    """:returns: expected answers ``n`` and right answers ``r`` per item and node, and the log-likelihood."""
    logits = numpy.exp(alpha)[:, None] * nodes[None, :] + c[:, None]          # items x nodes
    log_p = -numpy.logaddexp(0.0, -logits)
    log_q = -numpy.logaddexp(0.0, logits)
    joint = answers @ log_p + (mask - answers) @ log_q + log_weights[None, :]  # learners x nodes
    top = joint.max(axis=1, keepdims=True)
    density = numpy.exp(joint - top)
    total = density.sum(axis=1, keepdims=True)
    posterior = density / total
    log_likelihood = float((top[:, 0] + numpy.log(total[:, 0])).sum())
    return mask.T @ posterior, answers.T @ posterior, log_likelihood


def _m_step(n, r, alpha, c, nodes, shared: bool):
    """One Fisher-scoring step on (alpha, c) of every item, with the priors; :returns: the new values."""
    a = numpy.exp(alpha)
    p = 1.0 / (1.0 + numpy.exp(-(a[:, None] * nodes[None, :] + c[:, None])))
    residual = r - n * p                     # d loglik / d logit, per item and node
    info = n * p * (1.0 - p)                 # - d2 loglik / d logit2
    x = a[:, None] * nodes[None, :]          # d logit / d alpha
    g_alpha = (residual * x).sum(axis=1) - alpha / _ALPHA_SD ** 2
    g_c = residual.sum(axis=1) - c / _C_SD ** 2
    h_aa = (info * x * x).sum(axis=1) + 1 / _ALPHA_SD ** 2
    h_ac = (info * x).sum(axis=1)
    h_cc = info.sum(axis=1) + 1 / _C_SD ** 2
    if shared:
        # Alpha is common: its step uses the sums over items, c the items' own terms.
        d_c = numpy.clip(g_c / h_cc, -_STEP_MAX, _STEP_MAX)
        g = g_alpha.sum() + (alpha.size - 1) * alpha[0] / _ALPHA_SD ** 2
        h = h_aa.sum() - (alpha.size - 1) / _ALPHA_SD ** 2
        d_alpha = numpy.full_like(alpha, numpy.clip(g / h, -_STEP_MAX, _STEP_MAX))
        return alpha + d_alpha, c + d_c
    det = h_aa * h_cc - h_ac ** 2
    d_alpha = numpy.clip((h_cc * g_alpha - h_ac * g_c) / det, -_STEP_MAX, _STEP_MAX)
    d_c = numpy.clip((h_aa * g_c - h_ac * g_alpha) / det, -_STEP_MAX, _STEP_MAX)
    return alpha + d_alpha, c + d_c


def fit_irt(answers, mask=None, model: str = "2PL", tolerance: float = 1e-4, max_iterations: int = 500) -> ItemFit:
    """Fit item parameters to a matrix of right/wrong answers.

    :param answers: learners x items, 1 for a right answer, 0 for a wrong one (or none).
    :param mask: learners x items, 1 where the learner answered the item (default: everywhere).
    :param model: ``"2PL"`` (a discrimination per item) or ``"rasch"`` (one shared).
    :param tolerance: stop when no parameter moved more than this in an iteration.
    :param max_iterations: stop after this many EM iterations anyway.
    :returns: the difficulties and discriminations, in the items' column order.
    :raises ValueError: an unknown model, shapes that differ, or no items.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, not {model!r}")
    answers = numpy.asarray(answers, dtype=float)
    mask = numpy.ones_like(answers) if mask is None else numpy.asarray(mask, dtype=float)
    if answers.ndim != 2 or answers.shape != mask.shape or answers.shape[1] == 0:
        raise ValueError(f"answers {answers.shape} and mask {mask.shape} must be the same learners x items matrix")
    answers = answers * mask
    nodes, weights = _quadrature()
    log_weights = numpy.log(weights)
    items = answers.shape[1]
    # Start from the logit of each item's proportion right, a = 1.
    right = (answers.sum(axis=0) + 0.5) / (mask.sum(axis=0) + 1.0)
    alpha, c = numpy.zeros(items), numpy.log(right / (1 - right))
    converged, log_likelihood, iteration = False, float("nan"), 0
    for iteration in range(1, max_iterations + 1):
        n, r, log_likelihood = _e_step(answers, mask, alpha, c, nodes, log_weights)
        new_alpha, new_c = _m_step(n, r, alpha, c, nodes, shared=model == "rasch")
        change = max(numpy.abs(new_alpha - alpha).max(), numpy.abs(new_c - c).max())
        alpha, c = new_alpha, new_c
        if change < tolerance:
            converged = True
            break
    a = numpy.exp(alpha)
    return ItemFit(model, -c / a, a, iteration, converged, log_likelihood)


def simulate_responses(rng: numpy.random.Generator, a, b, learners: int) -> numpy.ndarray:
    """Draw right/wrong answers of ``learners`` learners (``theta ~ N(0, 1)``) to items ``(a, b)``.

    :returns: a learners x items matrix of 0 and 1.
    """
    a, b = numpy.asarray(a, dtype=float), numpy.asarray(b, dtype=float)
    theta = rng.standard_normal(learners)
    p = 1.0 / (1.0 + numpy.exp(-a[None, :] * (theta[:, None] - b[None, :])))
    return (rng.random(p.shape) < p).astype(float)
