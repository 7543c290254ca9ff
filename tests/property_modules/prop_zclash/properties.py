"""Redefines ``learn.verb`` for ``edx``: a collision with ``prop_layer``."""
from sandbox.properties import event_property


@event_property(namespace="learn", name="verb", source="edx")
def my_edx_verb(event):
    """Another idea of the verb of an edX event."""
    return "http://clash/" + event["event_type"]
