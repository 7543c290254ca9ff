"""irt: how hard each problem is and how well it separates learners, from an item response model.

The module keeps the result of every server ``problem_check`` event, one
document per (learner, problem, attempt number), so a re-delivered or
re-logged submission lands on the same document and counts once. Each
learner's first attempt at a problem (right when ``success`` is ``"correct"``)
feeds a 2PL or Rasch model fitted by marginal maximum likelihood (see
``model.py``: EM over Gauss-Hermite quadrature, abilities N(0, 1), weak priors).
Learners whose first attempt was not logged are left out for that problem.

- ``/query/irt?problem_id=&model=auto``: ``{"problem_id", "model", "difficulty",
  "discrimination", "n_learners", "n_responses"}``. ``n_learners`` counts the
  first attempts the fit used, ``n_responses`` every submission logged.
- ``/query/irt_items?model=auto``: the same for every problem, easiest first.
- ``/view/irt_view?model=auto``: item characteristic curves and a table.

``model`` is ``2PL``, ``rasch`` or ``auto``: 2PL from :data:`MIN_LEARNERS_2PL`
learners on, Rasch below (a discrimination per item needs many answers). A fit
is kept in the module's cache until new submissions arrive.
"""
import html
import json

import numpy
from pymongo import UpdateOne

from sandbox import BadParameter, event_handler, query, view

from .charts import icc_svg
from .model import MODELS, fit_irt

SUBMISSIONS = "submissions"
STATE = "versions"
VERSION_ID = "version"
MIN_LEARNERS_2PL = 200


def _payload(evt) -> dict | None:
    payload = evt.get("event")
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            return None
    return payload if isinstance(payload, dict) else None


def submission_of(evt) -> dict | None:
    """What one server ``problem_check`` event says, or None when it lacks a learner, problem or attempt.

    :returns: ``{"_id", "user", "problem_id", "attempt", "correct", "time", "course_id"}``; the
        ``_id`` is the submission's identity, ``[user, problem_id, attempt]`` as JSON.
    """
    payload = _payload(evt)
    context = evt.get("context") if isinstance(evt.get("context"), dict) else {}
    user = evt.get("username") or context.get("user_id")
    if payload is None or user in (None, ""):
        return None
    problem_id, attempt = payload.get("problem_id"), payload.get("attempts")
    if not isinstance(problem_id, str) or not problem_id or isinstance(attempt, bool):
        return None
    try:
        attempt = int(attempt)
    except (TypeError, ValueError):
        return None
    success = payload.get("success")
    if success in ("correct", "incorrect"):
        correct = success == "correct"
    else:
        try:
            correct = float(payload["max_grade"]) > 0 and float(payload["grade"]) >= float(payload["max_grade"])
        except (KeyError, TypeError, ValueError):
            return None
    user = str(user)
    return {"_id": json.dumps([user, problem_id, attempt], separators=(",", ":")), "user": user,
            "problem_id": problem_id, "attempt": attempt, "correct": correct,
            "time": evt.get("time"), "course_id": context.get("course_id")}


@event_handler(filter={"event_type": "problem_check", "event_source": "server"})
def record_submissions(db, log, events):
    """Keep each submission once (the first logged for its learner, problem and attempt number)."""
    writes = []
    for evt in events:
        submission = submission_of(evt)
        if submission is None:
            log.warning("ignoring a problem_check without learner, problem_id or attempts: %r", dict(evt.event))
            continue
        key = submission.pop("_id")
        writes.append(UpdateOne({"_id": key}, {"$setOnInsert": submission}, upsert=True))
    if writes:
        db[SUBMISSIONS].bulk_write(writes, ordered=False)
        # Any batch may add submissions: the cached fit is for an older version.
        db[STATE].update_one({"_id": VERSION_ID}, {"$inc": {"n": 1}}, upsert=True)


def _wanted(model: str) -> str:
    """:returns: ``auto``, ``2PL`` or ``rasch``. :raises BadParameter: another model."""
    wanted = {"auto": "auto", "2pl": "2PL", "rasch": "rasch"}.get(model.strip().lower())
    if wanted is None:
        raise BadParameter("model", f"must be one of auto, {', '.join(MODELS)}")
    return wanted


def _fit(db, cache, model: str) -> dict:
    """:returns: ``{problem_id: answer}`` for every problem with a first attempt, fitting when needed."""
    wanted = _wanted(model)
    state = db[STATE].find_one({"_id": VERSION_ID})
    key = f"fit|{wanted}|{state['n'] if state else 0}"
    cached = cache.get(key)
    if cached is not None:
        return cached
    firsts = list(db[SUBMISSIONS].find({"attempt": 1}, {"user": 1, "problem_id": 1, "correct": 1, "_id": 0}))
    users = sorted({s["user"] for s in firsts})
    name = wanted if wanted != "auto" else "2PL" if len(users) >= MIN_LEARNERS_2PL else "rasch"
    problems = sorted({s["problem_id"] for s in firsts})
    result = {}
    if problems:
        row = {user: n for n, user in enumerate(users)}
        column = {problem: n for n, problem in enumerate(problems)}
        answers = numpy.zeros((len(users), len(problems)))
        mask = numpy.zeros_like(answers)
        for s in firsts:
            mask[row[s["user"]], column[s["problem_id"]]] = 1.0
            answers[row[s["user"]], column[s["problem_id"]]] = 1.0 if s["correct"] else 0.0
        fit = fit_irt(answers, mask, model=name)
        totals = {doc["_id"]: doc["n"] for doc in db[SUBMISSIONS].aggregate(
            [{"$group": {"_id": "$problem_id", "n": {"$sum": 1}}}])}
        for n, problem in enumerate(problems):
            result[problem] = {"problem_id": problem, "model": name, "difficulty": float(fit.difficulty[n]),
                               "discrimination": float(fit.discrimination[n]),
                               "n_learners": int(mask[:, n].sum()), "n_responses": int(totals.get(problem, 0))}
    cache.set(key, result, 3600)  # stale entries (older versions) expire
    return result


@query()
def irt(db, cache, problem_id: str, model: str = "auto"):
    """Difficulty and discrimination of one problem.

    :param problem_id: the problem's usage key (``event.problem_id`` of its ``problem_check``).
    :param model: ``auto``, ``2PL`` or ``rasch``.
    :returns: ``{"problem_id", "model", "difficulty", "discrimination", "n_learners", "n_responses"}``.
    :raises BadParameter: an unknown model, or a problem with no first attempt logged.
    """
    items = _fit(db, cache, model)
    if problem_id not in items:
        raise BadParameter("problem_id", f"no first attempt at {problem_id!r} has been logged")
    return items[problem_id]


@query()
def irt_items(db, cache, model: str = "auto"):
    """Difficulty and discrimination of every problem with a first attempt logged, easiest first.

    :param model: ``auto``, ``2PL`` or ``rasch``.
    :returns: a list of what :func:`irt` answers.
    :raises BadParameter: an unknown model.
    """
    return sorted(_fit(db, cache, model).values(), key=lambda item: (item["difficulty"], item["problem_id"]))


@view()
def irt_view(query, model: str = "auto"):
    """Item characteristic curves of every problem, and their parameters."""
    items = query.irt_items(model=_wanted(model))
    if not items:
        return "<html><body><h1>Item response model</h1><p>No problem_check submission yet.</p></body></html>"
    rows = "".join(
        f"<tr><td title=\"{html.escape(i['problem_id'])}\">{html.escape(i['problem_id'].rsplit('@', 1)[-1][:12])}</td>"
        f"<td>{i['difficulty']:.2f}</td><td>{i['discrimination']:.2f}</td>"
        f"<td>{i['n_learners']}</td><td>{i['n_responses']}</td></tr>" for i in items)
    return (f"<html><body><h1>Item response model ({html.escape(items[0]['model'])})</h1>"
            "<p>Probability of a right first attempt against ability; steeper curves "
            "separate learners better, curves further right are harder.</p>"
            f"{icc_svg(items)}"
            "<table><thead><tr><th>problem</th><th>difficulty</th><th>discrimination</th>"
            f"<th>learners</th><th>submissions</th></tr></thead><tbody>{rows}</tbody></table>"
            "</body></html>")
