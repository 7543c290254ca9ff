"""``evt.learn.verb`` / ``evt.learn.actor`` for two sources: ``edx`` and ``xapi``."""
from sandbox.properties import event_property, event_source


@event_source("edx")
def is_edx(event):
    """An edX tracking-log event."""
    return "event_type" in event


@event_source("xapi")
def is_xapi(event):
    """An xAPI statement."""
    return all(key in event for key in ("actor", "verb", "object"))


@event_property(namespace="learn", name="verb", source="edx")
def edx_verb(event):
    """The verb IRI of a learning event.

    edX events get ``http://x/<event_type>``.
    """
    return "http://x/" + event["event_type"]


@event_property(namespace="learn", name="verb", source="xapi")
def xapi_verb(event):
    """The verb IRI of a learning event (the statement's ``verb.id``)."""
    return event["verb"]["id"]


@event_property(namespace="learn", name="actor", source="edx")
def edx_actor(event):
    """Who did it: the edX username."""
    return event["username"]


@event_property(namespace="learn", name="actor", source="xapi")
def xapi_actor(event):
    """Who did it: the statement actor's account name, else its mbox."""
    actor = event["actor"]
    return (actor.get("account") or {}).get("name") or actor.get("mbox")
