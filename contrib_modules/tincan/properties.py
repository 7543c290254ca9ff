"""tincan: the xAPI view of learning events, as event properties (``evt.tincan.*``).

Two sources are declared here:

``edx``
    Open edX tracking events, in either form: the tracking-log line
    (``event_type``, ``time``, ``event`` — which browser events carry as a
    JSON-encoded *string*) or the in-process form event-routing-backends sees
    (``name``, ``timestamp``, ``data``, ``context``).
``xapi``
    Events that already are xAPI statements (``actor``, ``verb``, ``object``).

In namespace ``tincan`` both sources have the same properties: ``statements``
(a list: one statement, or for a multi-part problem one parent plus one per
part), ``statement`` (the first; None for an edX type that is not mapped),
``actor``, ``verb``, ``object``, ``result``, ``context``, ``timestamp``. An
analytics module reading only ``evt.tincan.*`` works on both streams.

The mapping itself is in ``edx_to_xapi.py`` beside this file (with
``edx_events.py`` reading edX events and ``vocabulary.py`` the xAPI ids). It
follows Open edX's own transformer; ``page_close`` and server page views,
which Open edX does not map, follow Ralph's converter.

Settings come from the ``[tincan]`` table of this folder's ``module.toml``,
read once per process on first use, so hostd and every sandbox agree:

``lms_root_url``
    base of activity ids and of the actor's ``homePage`` (default:
    ``https://<the event's host>``).
``[tincan.actor_names]``
    username or user id → the actor's account name (for example the anonymous
    ids an LMS exports); ``"*"`` names everyone not listed. Without an entry the
    name is the username, else the user id, else ``"anonymous"``.

This file is imported by hostd and by every sandbox: standard library only,
no work at import beyond importing its sibling files.
"""
from __future__ import annotations

import importlib
import sys
import tomllib
import types
from pathlib import Path

from sandbox.properties import event_property, event_source

__all__ = ["is_edx", "is_xapi", "default_transformer", "load_layer"]


_HERE = Path(__file__).resolve().parent  # resolved now: a process may change directory later


def load_layer(module: str, package: str | None = None):
    """Import ``<this folder>/<module>.py`` as a submodule of a package rooted here.

    ``properties.py`` is loaded by file path, not as part of a package, so it
    cannot import its siblings relatively; they can, once imported this way
    (without running the folder's ``__init__.py``, which is the module's).
    """
    package = package or f"_tincan_layer_{abs(hash(str(_HERE)))}"
    if package not in sys.modules:
        root = types.ModuleType(package)
        root.__path__ = [str(_HERE)]
        sys.modules[package] = root
    return importlib.import_module(f"{package}.{module}")


edx_to_xapi = load_layer("edx_to_xapi")
XapiTransformer = edx_to_xapi.XapiTransformer
EdxEvent = edx_to_xapi.EdxEvent


# -- settings -------------------------------------------------------------------

_default = None


def default_transformer() -> XapiTransformer:
    """The transformer of this process, configured by ``module.toml`` (read once)."""
    global _default  # one per process on purpose: hostd and sandboxes must agree
    if _default is None:
        settings = {}
        path = _HERE / "module.toml"
        if path.is_file():
            settings = tomllib.loads(path.read_text(encoding="utf-8")).get("tincan", {})
        _default = XapiTransformer(lms_root_url=settings.get("lms_root_url"),
                                   actor_names=settings.get("actor_names"))
    return _default


# -- sources and properties ---------------------------------------------------

def _is_event(event) -> bool:
    # An Event (``event.event`` is its raw dict) rather than a raw mapping.
    return hasattr(type(event), "event")


def _raw(event):
    return event.event if _is_event(event) else event


def _is_statement(raw) -> bool:
    return all(k in raw for k in ("actor", "verb", "object")) and isinstance(raw.get("verb"), dict)


@event_source("xapi")
def is_xapi(event) -> bool:
    """An xAPI statement: it has ``actor``, ``verb`` and ``object``."""
    return _is_statement(_raw(event))


@event_source("edx")
def is_edx(event) -> bool:
    """An Open edX event: ``event_type`` (tracking log), or ``name`` and ``timestamp`` (in-process)."""
    raw = _raw(event)
    if _is_statement(raw):
        return False
    return isinstance(raw.get("event_type"), str) or (
        isinstance(raw.get("name"), str) and ("timestamp" in raw or "time" in raw))


def _statements(event) -> list:
    if _is_event(event):
        found = event.tincan.statements  # computed once per event by the registry
    else:
        found = edx_statements(event) if is_edx(event) else xapi_statements(event)
    return found or []


def _field(event, name):
    found = _statements(event)
    return found[0].get(name) if found else None


@event_property(namespace="tincan", name="statements", source="edx")
def edx_statements(event):
    """The event as xAPI statements: one, or a parent and one per part of a multi-part
    problem; [] for an edX type that is not mapped, None for an event of no known source."""
    raw = _raw(event)
    return default_transformer().statements(raw) if is_edx(raw) else None


@event_property(namespace="tincan", name="statements", source="xapi")
def xapi_statements(event):
    """The statement itself, in a list."""
    raw = _raw(event)
    return [dict(raw)] if _is_statement(raw) else None


@event_property(namespace="tincan", name="actor", source="edx")
def edx_actor(event):
    """The xAPI agent (an account on the LMS); given for unmapped edX types too."""
    raw = _raw(event)
    return default_transformer().actor(raw) if is_edx(raw) else None


@event_property(namespace="tincan", name="timestamp", source="edx")
def edx_timestamp(event):
    """When it happened (ISO 8601), as the event says; given for unmapped edX types too."""
    raw = _raw(event)
    return EdxEvent(raw).timestamp if is_edx(raw) else None


@event_property(namespace="tincan", name="statement")
def statement(event):
    """The event's (main) xAPI statement; None for an edX type that is not mapped."""
    found = _statements(event)
    return found[0] if found else None


def _statement_field(name, doc, source=None):
    def prop(event):
        return _field(event, name)
    prop.__name__ = prop.__qualname__ = f"{source or 'statement'}_{name}"
    prop.__doc__ = doc
    return event_property(namespace="tincan", name=name, source=source)(prop)


# Whatever the source, these read the (main) statement.
statement_verb = _statement_field("verb", "The statement's verb (``tincan.verb.id``); None when unmapped.")
statement_object = _statement_field("object", "The statement's object (activity); None when unmapped.")
statement_result = _statement_field("result", "The statement's result (score, success, response...), or None.")
statement_context = _statement_field("context", "The statement's context (contextActivities...), or None.")
xapi_actor = _statement_field("actor", "The statement's actor.", source="xapi")
xapi_timestamp = _statement_field("timestamp", "The statement's timestamp.", source="xapi")
