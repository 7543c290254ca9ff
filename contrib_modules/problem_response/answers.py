"""The pipeline's problem response arithmetic, free of storage: a ``problem_check`` event to an
attempt, and a learner's latest attempt to one row per answer.

It follows the Open edX analytics pipeline's ``LatestProblemResponseDataTask``
and the ``get_problem_check_event`` and ``ProblemCheckEventMixin._generate_answers``
of its answer distribution that this task uses.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

__all__ = ["attempt", "answer_rows", "report_time"]

# The pipeline's default ``[problem-response] clean_text_regex``: hints in choice texts.
_HINTS = re.compile(r"(?:<choicehint.*?</choicehint>)|(?:<choicehint.*?\>)")
_SPACES = re.compile(r"\s+")
# What an attempt keeps of its event data: all that its rows are made of.
_KEPT = ("answers", "correct_map", "grade", "max_grade", "submission")


def _valid_answer_ids(answers) -> bool:
    """``_check_answer_ids``: a dict whose ids are ASCII, without tab or newline."""
    return isinstance(answers, dict) and all(
        isinstance(key, str) and key.isascii() and "\n" not in key and "\t" not in key for key in answers)


def _timestamp(pipeline_time) -> str | None:
    """``get_event_time`` then ``datetime_to_timestamp``: ISO 8601 without zone, and without
    microseconds when they are zero (the string attempts are ordered by)."""
    try:
        return datetime.strptime(pipeline_time, "%Y-%m-%dT%H:%M:%S.%f").isoformat()
    except (TypeError, ValueError):
        return None


def attempt(event, pipeline_time, course_id, data) -> tuple | None:
    """The pipeline's mapper: a server ``problem_check`` event as one attempt.

    :param event: the raw event.
    :param pipeline_time: ``evt.edx_pipeline.time``.
    :param course_id: ``evt.edx_pipeline.context_course_id`` (never from the URL).
    :param data: ``evt.edx_pipeline.event_data``.
    :returns: ``((course_id, problem_id, username), timestamp, kept_data)`` or None when the
        pipeline drops the event (no time, username, context, course or problem; no answers,
        or answer ids it refuses).
    """
    username = event.get("username")
    if (event.get("event_type") != "problem_check" or event.get("event_source") != "server"
            or not event.get("time") or not isinstance(username, str) or not username.strip()):
        return None
    timestamp = _timestamp(pipeline_time)
    if timestamp is None or data is None or event.get("context") is None or not course_id:
        return None
    problem_id = data.get("problem_id")
    answers = data.get("answers", {})
    if problem_id is None or not answers or not _valid_answer_ids(answers) \
            or not _valid_answer_ids(data.get("submission", {})):
        return None
    kept = {key: data[key] for key in _KEPT if key in data}
    # the username as logged: only the check for an empty one strips it
    return (course_id, problem_id, username), timestamp, kept


def _hidden(answer_id: str) -> bool:
    return answer_id.endswith("_dynamath") or answer_id.endswith("_comment")


def _clean(text):
    """``_clean_string``: whitespace runs to one space, choice hints removed; lists item by item."""
    if isinstance(text, (list, tuple)):
        return [_clean(item) for item in text]
    text = "" if text is None else text if isinstance(text, str) else str(text)
    return _HINTS.sub("", _SPACES.sub(" ", text))


def _submissions(data: dict):
    """``_generate_answers``: ``(answer_id, submission)`` for each answer that is not hidden."""
    answers, correct_map = data.get("answers") or {}, data.get("correct_map") or {}
    if "submission" in data:
        for answer_id, submission in (data.get("submission") or {}).items():
            if _hidden(answer_id) or not isinstance(submission, dict):
                continue
            submission = dict(submission)
            # a raw answer that differs from the submitted text is the choice's id
            if answers.get(answer_id) != submission.get("answer"):
                submission["answer_value_id"] = answers.get(answer_id)
            submission["answer_correct_map"] = correct_map.get(answer_id)
            yield answer_id, submission
    else:  # an old event, without the submission's texts
        for answer_id, value in answers.items():
            if _hidden(answer_id) or answer_id not in correct_map:
                continue
            yield answer_id, {"answer_value_id": value, "answer_correct_map": correct_map.get(answer_id)}


def report_time(timestamp: str) -> str:
    """:returns: an attempt's time as the report's UTC date-time, in ISO 8601 (``...+00:00``)."""
    parts = [int(x) for x in re.split(r"\D+", timestamp) if x]
    return datetime(*parts, tzinfo=timezone.utc).isoformat()


def _number(value) -> float | None:
    """A score as the report's float column holds it; None when absent or not a number."""
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def answer_rows(data: dict) -> list[dict]:
    """``get_answer_data`` over the latest attempt: one row part per answer.

    :param data: the kept event data of the learner's latest attempt.
    :returns: ``[{"answer_id", "question", "score", "max_score", "correct", "answer"}]``:
        ``correct`` is True, False or None (correctness unknown), ``answer`` a list of texts
        (the submitted text, else the raw answer, hints removed).
    """
    rows = []
    for answer_id, submission in _submissions(data):
        correctness = (submission.get("answer_correct_map") or {}).get("correctness")
        answer = _clean(submission.get("answer", submission.get("answer_value_id", "")))
        rows.append({
            "answer_id": answer_id,
            "question": _clean(submission.get("question", "")),
            "score": _number(data.get("grade")),
            "max_score": _number(data.get("max_grade")),
            "correct": True if correctness == "correct" else False if correctness == "incorrect" else None,
            "answer": answer if isinstance(answer, list) else [answer],
        })
    return rows
