"""A data layer that records which process imports it (pid, euid, parent) into $HOME/imports.jsonl."""
import json
import os

from sandbox import event_property

with open(os.path.join(os.environ.get("HOME", "/tmp"), "imports.jsonl"), "a", encoding="utf-8") as _out:
    _out.write(json.dumps({"pid": os.getpid(), "euid": os.geteuid(), "ppid": os.getppid()}) + "\n")


@event_property(namespace="spy", name="kind")
def kind(event):
    """The event's ``kind`` field."""
    return event.get("kind")
