"""A handler filtered on the namespace of the looping data layer."""
from sandbox import event_handler


@event_handler(filter={"loop_layer.x": 1})
def record(events):
    """Never called."""
