"""exit_handler, fixed."""
from sandbox import event_handler, query


@query()
def exit_handler_status():
    return "fixed"


@event_handler(filter={"kind": "exit_me"})
def exit_on_event(events):
    pass
