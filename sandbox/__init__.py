"""The module API: everything a module author imports.

    from sandbox import view, query, event_handler, cron, Event, render
    from sandbox import event_property, event_source      # in a properties.py
"""
from .decorators import cron, event_handler, query, view
from .errors import BadParameter, FileQuotaExceeded
from .events import Event
from .properties import event_property, event_source
from .rendering import render

__all__ = ["view", "query", "event_handler", "cron", "Event", "BadParameter", "FileQuotaExceeded",
           "event_property", "event_source", "render"]
