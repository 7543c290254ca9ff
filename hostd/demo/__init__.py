"""``hostd demo``: a synthetic Open edX course stream, and the ground truth it was drawn from.

:func:`generate` simulates learners following a course (enrolment, page
views, videos, problems with answers from a 2PL item response model, sessions,
dropout) and returns the events in the tracking-log shape with the truth;
:mod:`hostd.demo.command` writes both to files and can feed the events to a
running daemon.
"""
from .simulate import DEFAULT_COURSE_ID, DEFAULT_START, Demo, generate

__all__ = ["Demo", "generate", "DEFAULT_COURSE_ID", "DEFAULT_START"]
