"""The module API: everything a module author imports.

    from sandbox import view, query, event_handler, cron, Event
"""
from .decorators import cron, event_handler, query, view
from .errors import BadParameter
from .events import Event

__all__ = ["view", "query", "event_handler", "cron", "Event", "BadParameter"]
