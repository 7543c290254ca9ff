"""Shared by irt's tests: the model imported as the module imports it, and answers from a demo truth.

A plain helper module (not a conftest): test files import it by name, their
folder being on ``sys.path`` under pytest's default import mode.
"""
import importlib.util
import sys
from pathlib import Path

import numpy

MODULE = Path(__file__).resolve().parents[1]


def load_model():
    """:returns: ``model.py`` imported by path (the module is not an importable package)."""
    spec = importlib.util.spec_from_file_location("irt_model_under_test", MODULE / "model.py")
    model = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = model  # dataclasses look their module up there
    spec.loader.exec_module(model)
    return model


def first_attempts(truth: dict) -> tuple[numpy.ndarray, numpy.ndarray, list[str]]:
    """The first-attempt matrix of a ``hostd demo`` truth, learners and problems in sorted order.

    :returns: ``(answers, mask, problem ids)``: 1 where right first time, 1 where attempted.
    """
    users = sorted(truth["attempts"])
    problems = sorted({p for records in truth["attempts"].values() for p in records})
    column = {p: n for n, p in enumerate(problems)}
    answers = numpy.zeros((len(users), len(problems)))
    mask = numpy.zeros_like(answers)
    for row, user in enumerate(users):
        for problem, record in truth["attempts"][user].items():
            mask[row, column[problem]] = 1.0
            answers[row, column[problem]] = float(record["first_correct"])
    return answers, mask, problems


def correlation(x, y) -> float:
    """:returns: Pearson's correlation of two sequences."""
    return float(numpy.corrcoef(numpy.asarray(x, dtype=float), numpy.asarray(y, dtype=float))[0, 1])
