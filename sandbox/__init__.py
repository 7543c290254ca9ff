"""The module API: everything a module author imports.

    from sandbox import view, query, event_handler, cron, memoize_query, Event, render
    from sandbox import event_property, event_source      # in a properties.py
"""
from .decorators import cron, event_handler, query, view
from .errors import BadParameter, CacheMiss, FileQuotaExceeded
from .events import Event
from .memoize import memoize_query
from .properties import event_property, event_source
from .rendering import render

__all__ = ["view", "query", "event_handler", "cron", "memoize_query", "Event", "BadParameter",
           "CacheMiss", "FileQuotaExceeded", "event_property", "event_source", "render"]
