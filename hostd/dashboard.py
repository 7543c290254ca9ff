"""Pages for people: the dashboard (``/``), ``/schema`` (JSON, or HTML with ``?f=html``),
``/event_properties`` and the dashboard's own script and stylesheet (``/assets/{file}``).

The dashboard is rendered from the module table and the host's status without
calling any view: each view is fetched by the page's script (``assets/dashboard.js``)
into its own frame, so a slow or failing view never holds up the page or another view.
"""
from __future__ import annotations

import logging
import math
from importlib import resources

import falcon
import jinja2

from sandbox.errors import InsightsError

from .auth import request_policy
from .federation import LOCAL, request_peers
from .policy import OPEN, Policy

__all__ = ["make_templates", "DashboardResource", "SchemaResource", "EventPropertiesResource",
           "AssetResource", "schema_entries", "peer_entries", "summary", "error_summary", "form_fields"]

log = logging.getLogger(__name__)

#: A view's frame gives up this long after hostd itself would have answered 504.
FRAME_GRACE_S = 5.0
#: The module's call limit when its record carries none (``limits.call_timeout_s``'s default).
DEFAULT_CALL_TIMEOUT_S = 30.0
#: Longest ``?view_timeout_s=`` accepted (browsers' timers overflow far past it).
MAX_VIEW_TIMEOUT_S = 3600.0
_ASSET_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def summary(doc: str) -> str:
    """:returns: a docstring's prose, without its Sphinx field list (``:param ...``)."""
    lines = []
    for line in (doc or "").splitlines():
        if line.strip().startswith(":"):
            break
        lines.append(line.strip())
    return " ".join(" ".join(lines).split())


def error_summary(text: str | None, limit: int = 300) -> str:
    """:returns: the line that says what went wrong: a traceback's last non-blank line
        (``ValueError: ...``), cut to ``limit`` characters; empty for no error."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    return last if len(last) <= limit else last[:limit - 1] + "\N{HORIZONTAL ELLIPSIS}"


def make_templates() -> jinja2.Environment:
    """:returns: the Jinja2 environment of hostd's own pages (autoescaped)."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("hostd", "templates"),
                             autoescape=jinja2.select_autoescape(default=True))
    env.filters["summary"] = summary
    return env


def schema_entries(snapshot, policy: Policy = OPEN, peers=None) -> list[dict]:
    """:returns: the ``/schema`` list: one entry per view and query name (aliases included)
        that ``policy`` shows, without the parameters it fixes. Each entry has ``node``:
        ``"local"`` for this node's modules, a peer's URL for a name that peer answers (see
        :mod:`hostd.federation`; with ``unavailable`` when the peer is down), and
        ``aliases``: the other names of the same endpoint that ``policy`` shows.

    :param peers: the :class:`~hostd.federation.Federation` whose names are added after
        this node's own (``None``: this node's only).
    """
    entries = []
    for endpoint in snapshot.endpoints(("view", "query")):
        names = [endpoint["name"], *endpoint.get("aliases", [])]
        shown = [name for name in names if policy.shows(endpoint, name)]
        for name in shown:
            entries.append(policy.entry({"class": endpoint["class"], "name": name, "module": endpoint["module"],
                                         "params": endpoint["params"], "category": endpoint["category"],
                                         "doc": endpoint["doc"], "node": LOCAL,
                                         "aliases": [n for n in shown if n != name]}))
    return entries + peer_entries(snapshot, peers, policy)


def peer_entries(snapshot, peers, policy: Policy = OPEN) -> list[dict]:
    """:returns: the ``/schema`` entries of the names peers answer for this node: those no
        module of ``snapshot`` has (even one ``policy`` hides: it is answered here, not by a
        peer), that ``policy`` shows, without the parameters it fixes; ``[]`` without ``peers``."""
    if peers is None:
        return []
    return [policy.entry(entry) for entry in peers.entries()
            if snapshot.find(entry["class"], entry["name"]) is None and policy.shows(entry)]


def form_fields(params: list[dict]) -> list[dict]:
    """The inputs of a view's parameter form, from its ``/schema`` parameters.

    ``int`` and ``float`` are number inputs, ``bool`` a checkbox, ``list[...]`` a row
    of inputs of its item type that the person can extend, anything else a text input.

    :param params: ``[{"name", "type", "required", "default"}]`` as ``/schema`` gives them.
    :returns: ``[{"name", "type", "required", "widget", "step", "list", "texts", "checked"}]``:
        ``widget`` is an ``<input>`` type, ``texts`` the initial texts (the default's).
    """
    fields = []
    for param in params:
        kind = param["type"]
        is_list = kind.startswith("list[") and kind.endswith("]")
        item = kind[5:-1] if is_list else kind
        default = param.get("default") if not param.get("required") else None
        if item == "bool" and not is_list:
            fields.append({**_field(param, "checkbox"), "checked": default is True})
            continue
        widget, step = {"int": ("number", "1"), "float": ("number", "any")}.get(item, ("text", None))
        if is_list:
            values = [_text(v) for v in default] if isinstance(default, list) and default else [""]
        else:
            values = [_text(default)]
        fields.append({**_field(param, widget), "step": step, "list": is_list, "texts": values})
    return fields


def _field(param: dict, widget: str) -> dict:
    return {"name": param["name"], "type": param["type"], "required": bool(param.get("required")),
            "widget": widget, "step": None, "list": False, "texts": [""], "checked": False}


def _text(value) -> str:
    """:returns: a default as an input's text (``None``: empty)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class SchemaResource:
    """``GET /schema``: every view and query with its parameters."""

    def __init__(self, web, templates):
        self._web = web
        self._templates = templates

    def on_get(self, req, resp):
        entries = schema_entries(self._web.table.snapshot(), request_policy(req), request_peers(self._web, req))
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
    """``GET /``: modules with their state, last error, lag and dead letters, and their views,
    each in its own frame with a parameter form; then the modules of peers (their views and
    queries this node answers), marked with their node.

    ``?view_timeout_s=N`` makes every frame give up after ``N`` seconds (by default a
    frame waits for the module's ``call_timeout_s`` and a grace of :data:`FRAME_GRACE_S`).
    """

    def __init__(self, web, templates):
        self._web = web
        self._templates = templates

    def on_get(self, req, resp):
        view_timeout_s = _view_timeout(req)
        snapshot = self._web.table.snapshot()
        policy = request_policy(req)
        try:
            status, status_problem = self._web.module_status(), None
        except InsightsError as err:  # the page still shows what the module table knows
            log.warning("the dashboard has no live status: %s", err)
            status, status_problem = {}, str(err)
        modules = []
        for name in sorted(snapshot.modules):
            record = snapshot.modules[name]
            endpoints = [e if e["class"] == "handler" else policy.entry(e)
                         for e in record.get("endpoints", []) if e["class"] == "handler" or policy.shows(e)]
            if policy is not OPEN and not policy.has_scope("admin") and \
                    not any(e["class"] != "handler" for e in endpoints):
                continue  # a token sees the modules it may use
            modules.append(self._module(name, {**record, "endpoints": endpoints}, status.get(name) or {},
                                        view_timeout_s))
        modules.extend(self._peer_modules(peer_entries(snapshot, request_peers(self._web, req), policy),
                                          view_timeout_s))
        states = {}
        for module in modules:
            states[module["state"]] = states.get(module["state"], 0) + 1
        resp.content_type = falcon.MEDIA_HTML
        resp.text = self._templates.get_template("dashboard.html").render(
            modules=modules, states=sorted(states.items()), status_problem=status_problem)

    @staticmethod
    def _module(name: str, record: dict, live: dict, view_timeout_s: float | None) -> dict:
        """One module as the template shows it: the host's live status over the table's record."""
        endpoints = record.get("endpoints", [])
        last_error = live.get("last_error", record.get("last_error"))
        call_timeout_s = (record.get("limits") or {}).get("call_timeout_s", DEFAULT_CALL_TIMEOUT_S)
        timeout_s = view_timeout_s if view_timeout_s is not None else call_timeout_s + FRAME_GRACE_S
        return {"name": name, "node": None, "state": live.get("state", record.get("state", "unknown")),
                "pid": live.get("pid", record.get("pid")), "restarts": live.get("restarts", record.get("restarts", 0)),
                "lag": live.get("lag"), "handled": live.get("handled"), "dead_letters": live.get("dead_letters"),
                "rebuilding": bool(live.get("rebuilding", record.get("rebuilding"))),
                "last_error": last_error, "error_summary": error_summary(last_error),
                "description": (record.get("manifest") or {}).get("description", ""),
                "views": _views(endpoints, timeout_s),
                "queries": [e for e in endpoints if e["class"] == "query"],
                "handlers": [e for e in endpoints if e["class"] == "handler"]}

    @staticmethod
    def _peer_modules(entries: list[dict], view_timeout_s: float | None) -> list[dict]:
        """The modules of peers as the template shows them: their views and queries, by node."""
        groups: dict = {}
        for entry in entries:
            groups.setdefault((entry["node"], entry["module"]), []).append(entry)
        # the peer's own limit is not known here: a frame waits as long as this node does
        timeout_s = view_timeout_s if view_timeout_s is not None else DEFAULT_CALL_TIMEOUT_S + FRAME_GRACE_S
        modules = []
        for (node, name), endpoints in groups.items():
            unavailable = next((e["unavailable"] for e in endpoints if e.get("unavailable")), None)
            modules.append({"name": name, "node": node, "state": "unreachable" if unavailable else "remote",
                            "unavailable": unavailable, "views": _views(endpoints, timeout_s),
                            "queries": [e for e in endpoints if e["class"] == "query"], "handlers": []})
        return modules


def _views(endpoints: list[dict], timeout_s: float) -> list[dict]:
    """The views among ``endpoints`` as the template shows them, each with its parameter form."""
    return [{"name": e["name"], "doc": e.get("doc", ""), "fields": form_fields(e.get("params", [])),
             "autoload": not any(p.get("required") for p in e.get("params", [])), "timeout_s": timeout_s}
            for e in endpoints if e["class"] == "view"]


def _view_timeout(req) -> float | None:
    """:returns: ``?view_timeout_s=`` as seconds, or None when not given.

    :raises falcon.HTTPInvalidParam: not a number in (0, :data:`MAX_VIEW_TIMEOUT_S`].
    """
    text = req.get_param("view_timeout_s")
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_VIEW_TIMEOUT_S:  # NaN fails too
        raise falcon.HTTPInvalidParam(f"a number of seconds above 0, at most {MAX_VIEW_TIMEOUT_S:g}",
                                      "view_timeout_s")
    return value


class AssetResource:
    """``GET /assets/{file}``: the dashboard's own script and stylesheet (``hostd/assets/``).

    Only the files shipped there are served; any other name is 404.
    """

    def __init__(self):
        folder = resources.files("hostd") / "assets"
        self._files = {item.name: item for item in folder.iterdir()
                       if item.is_file() and any(item.name.endswith(s) for s in _ASSET_TYPES)}

    def on_get(self, req, resp, file):
        item = self._files.get(file)
        if item is None:
            raise falcon.HTTPNotFound(title="no such asset")
        resp.content_type = next(t for s, t in _ASSET_TYPES.items() if file.endswith(s))
        resp.cache_control = ["no-cache"]
        resp.data = item.read_bytes()
