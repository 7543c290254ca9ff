"""Pages for people: the dashboard (``/``) and ``/schema`` (JSON, or HTML with ``?f=html``)."""
from __future__ import annotations

import falcon
import jinja2

from .auth import request_policy
from .policy import OPEN, Policy

__all__ = ["make_templates", "DashboardResource", "SchemaResource", "EventPropertiesResource",
           "schema_entries", "summary"]


def summary(doc: str) -> str:
    """:returns: a docstring's prose, without its Sphinx field list (``:param ...``)."""
    lines = []
    for line in (doc or "").splitlines():
        if line.strip().startswith(":"):
            break
        lines.append(line.strip())
    return " ".join(" ".join(lines).split())


def make_templates() -> jinja2.Environment:
    """:returns: the Jinja2 environment of hostd's own pages (autoescaped)."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("hostd", "templates"),
                             autoescape=jinja2.select_autoescape(default=True))
    env.filters["summary"] = summary
    return env


def schema_entries(snapshot, policy: Policy = OPEN) -> list[dict]:
    """:returns: the ``/schema`` list: one entry per view and query name (aliases included)
        that ``policy`` shows, without the parameters it fixes."""
    entries = []
    for endpoint in snapshot.endpoints(("view", "query")):
        for name in [endpoint["name"], *endpoint.get("aliases", [])]:
            if policy.shows(endpoint, name):
                entries.append(policy.entry({"class": endpoint["class"], "name": name, "module": endpoint["module"],
                                             "params": endpoint["params"], "category": endpoint["category"],
                                             "doc": endpoint["doc"]}))
    return entries


class SchemaResource:
    """``GET /schema``: every view and query with its parameters."""

    def __init__(self, web, templates):
        self._web = web
        self._templates = templates

    def on_get(self, req, resp):
        entries = schema_entries(self._web.table.snapshot(), request_policy(req))
        if req.get_param("f") == "html":
            resp.content_type = falcon.MEDIA_HTML
            resp.text = self._templates.get_template("schema.html").render(entries=entries)
        else:
            resp.media = entries


class EventPropertiesResource:
    """``GET /event_properties``: every event property (namespace, name, sources, doc)."""

    def __init__(self, web, templates):
        self._web = web
        self._templates = templates

    def on_get(self, req, resp):
        properties = self._web.table.snapshot().properties
        if req.get_param("f") == "html":
            resp.content_type = falcon.MEDIA_HTML
            resp.text = self._templates.get_template("event_properties.html").render(properties=properties)
        else:
            resp.media = properties


class DashboardResource:
    """``GET /``: modules, their state and their views, each view in its own frame."""

    def __init__(self, web, templates):
        self._web = web
        self._templates = templates

    def on_get(self, req, resp):
        snapshot = self._web.table.snapshot()
        policy = request_policy(req)
        modules = []
        for name in sorted(snapshot.modules):
            record = snapshot.modules[name]
            endpoints = [e if e["class"] == "handler" else policy.entry(e)
                         for e in record.get("endpoints", []) if e["class"] == "handler" or policy.shows(e)]
            if policy is not OPEN and not policy.has_scope("admin") and \
                    not any(e["class"] != "handler" for e in endpoints):
                continue  # a token sees the modules it may use
            modules.append({"name": name, "state": record["state"], "restarts": record["restarts"],
                            "description": (record.get("manifest") or {}).get("description", ""),
                            "views": [e for e in endpoints if e["class"] == "view"],
                            "queries": [e for e in endpoints if e["class"] == "query"],
                            "handlers": [e for e in endpoints if e["class"] == "handler"]})
        resp.content_type = falcon.MEDIA_HTML
        resp.text = self._templates.get_template("dashboard.html").render(modules=modules)
