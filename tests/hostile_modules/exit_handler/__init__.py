"""Hostile: an event handler that ends its own process. Not a module to deploy."""
import os

from sandbox import event_handler, query


@query()
def exit_handler_status():
    return "hostile"


@event_handler(filter={"kind": "exit_me"})
def exit_on_event(events):
    """Exit (status 1) without any cleanup."""
    os._exit(1)
