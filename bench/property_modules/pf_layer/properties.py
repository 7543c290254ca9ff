"""``evt.bench.verb``: the verb IRI of an edX tracking event, ``http://x/<event_type>``."""
from sandbox.properties import event_property, event_source


@event_source("edx")
def is_edx(event):
    """An edX tracking-log event."""
    return "event_type" in event


@event_property(namespace="bench", name="verb", source="edx")
def edx_verb(event):
    """The verb IRI: ``http://x/<event_type>``."""
    return "http://x/" + event["event_type"]
