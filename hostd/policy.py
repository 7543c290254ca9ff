"""What a token may see and do: scopes, allowed and denied names, fixed parameters.

Pure data and functions, shared by the server (:mod:`hostd.auth`, which applies a
token's policy to each request) and the client (:meth:`hostd.client.Insights.restrict`,
which shows what such a token would see). A ``[[auth.tokens]]`` entry of the
configuration is read by :func:`token_entry`, which names the key of anything wrong.

The rules, for a view or query name:

* the token's ``scopes`` must hold ``views`` (for a view) or ``queries`` (for a query);
* a name is hidden when it, or another name of the same endpoint (an alias), is in
  ``deny``: an alias is no way around a denial;
* else it is visible when it is in ``allow``, or when ``default`` is ``"allow"``
  (``"deny"`` when absent: a token sees nothing it was not given);
* the parameters in ``fix`` are forced to their value in every call, and vanish from
  what the token sees of each endpoint's parameters.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

__all__ = ["SCOPES", "KIND_SCOPES", "TOKEN_FIELDS", "Policy", "OPEN", "token_entry", "token_digest",
           "policy_of"]

#: Every scope a token may hold.
SCOPES = ("events:write", "views", "queries", "admin")
#: The scope each kind of endpoint needs.
KIND_SCOPES = {"view": "views", "query": "queries"}
_DEFAULTS = ("allow", "deny")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]*")
_HEX64 = re.compile(r"[0-9a-f]{64}")

#: The keys of one ``[[auth.tokens]]`` table: ``(key, meaning)``; ``conf/hostd.toml`` documents each.
TOKEN_FIELDS = (
    ("name", "who holds the token (letters, digits, _ . : @ -); unique; shown in the log"),
    ("token_sha256", "hex SHA-256 of the token (hostd token new prints it)"),
    ("token", "the token in plain text, instead of token_sha256"),
    ("scopes", "of events:write, views, queries, admin"),
    ("default", "allow or deny: views and queries named in neither allow nor deny"),
    ("allow", "view and query names the token may use"),
    ("deny", "names it may not use (an alias of a denied name is denied too)"),
    ("fix", "parameters forced to a value in every call, e.g. { course = \"6.002x\" }"),
)
_TOKEN_KEYS = frozenset(key for key, _ in TOKEN_FIELDS)


def token_digest(token: str) -> str:
    """:returns: the hex SHA-256 of ``token``, as ``token_sha256`` holds it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Policy:
    """One token's view of the modules.

    :param default: ``"allow"`` or ``"deny"``: names in neither list.
    :param allow: names shown.
    :param deny: names hidden, with the other names of their endpoint.
    :param fix: parameters forced to these values.
    :param scopes: the token's scopes; ``None``: every scope (no token, or the client's
        :meth:`~hostd.client.Insights.restrict` without ``scopes``).
    :param name: the token's name (for the log), if any.
    """

    default: str = "deny"
    allow: frozenset = frozenset()
    deny: frozenset = frozenset()
    fix: dict = field(default_factory=dict)
    scopes: frozenset | None = None
    name: str | None = None

    def has_scope(self, scope: str) -> bool:
        """:returns: whether the policy holds ``scope`` (always, without a scope list)."""
        return self.scopes is None or scope in self.scopes

    def allows(self, kind: str, name: str, aliases=()) -> bool:
        """:returns: whether the view or query ``name`` is visible.

        :param aliases: the other names of the same endpoint (denying one denies them all).
        """
        if not self.has_scope(KIND_SCOPES[kind]):
            return False
        if name in self.deny or not self.deny.isdisjoint(aliases):
            return False
        return name in self.allow or self.default == "allow"

    def shows(self, endpoint: dict, name: str | None = None) -> bool:
        """:returns: whether an endpoint of the module table is visible under ``name`` (one of
            its names; default: its own)."""
        names = [endpoint["name"], *endpoint.get("aliases", ())]
        return self.allows(endpoint["class"], name or endpoint["name"], names)

    def entry(self, entry: dict) -> dict:
        """:returns: a ``/schema`` entry as this policy shows it (fixed parameters gone)."""
        if not self.fix:
            return entry
        params = [p for p in entry["params"] if p["name"] not in self.fix]
        return {**entry, "params": params, "category": "+".join(p["name"] for p in params)}

    def force(self, params: dict) -> dict:
        """:returns: request parameters with the fixed ones set to their value, whatever was sent."""
        return {**params, **self.fix} if self.fix else params


#: What a request without a token may see when none is required: everything.
OPEN = Policy(default="allow")


def _strings(value, where: str) -> frozenset:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) \
            or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where} must be a list of strings, got {value!r}")
    return frozenset(value)


def _fixed_value(value, where: str):
    scalar = (str, int, float, bool)
    if isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, scalar) for v in value)):
        return value
    raise ValueError(f"{where} must be a string, number, boolean or a list of them, got {value!r}")


def token_entry(entry, where: str) -> dict:
    """Check one ``[[auth.tokens]]`` table and normalise it.

    :param where: how to name it in errors (``"hostd.toml: auth.tokens[0]"``).
    :returns: the entry with every key: ``token_sha256`` (from ``token`` if that was given;
        the plain token is not kept), ``scopes``, ``default``, ``allow``, ``deny`` (sorted
        lists) and ``fix``.
    :raises ValueError: an unknown or missing key, or an ill-typed value (the message names it).
    """
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a table ([[auth.tokens]]), got {entry!r}")
    unknown = sorted(set(entry) - _TOKEN_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_TOKEN_KEYS))})")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{where}.name must be a name of letters, digits and _ . : @ -, got {name!r}")
    if ("token" in entry) == ("token_sha256" in entry):
        raise ValueError(f"{where} ({name}) needs exactly one of token_sha256 and token")
    if "token" in entry:
        if not isinstance(entry["token"], str) or len(entry["token"]) < 16:
            raise ValueError(f"{where}.token ({name}) must be a string of at least 16 characters")
        digest = token_digest(entry["token"])
    else:
        digest = entry["token_sha256"]
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest.lower()):
            raise ValueError(f"{where}.token_sha256 ({name}) must be 64 hex digits, got {digest!r}")
        digest = digest.lower()
    scopes = _strings(entry.get("scopes", []), f"{where}.scopes")
    wrong = sorted(scopes - set(SCOPES))
    if wrong:
        raise ValueError(f"{where}.scopes ({name}): unknown scope(s) {', '.join(map(repr, wrong))}"
                         f" (known: {', '.join(SCOPES)})")
    default = entry.get("default", "deny")
    if default not in _DEFAULTS:
        raise ValueError(f"{where}.default ({name}) must be 'allow' or 'deny', got {default!r}")
    fix = entry.get("fix", {})
    if not isinstance(fix, dict):
        raise ValueError(f"{where}.fix ({name}) must be a table of parameters, got {fix!r}")
    return {"name": name, "token_sha256": digest, "scopes": sorted(scopes), "default": default,
            "allow": sorted(_strings(entry.get("allow", []), f"{where}.allow")),
            "deny": sorted(_strings(entry.get("deny", []), f"{where}.deny")),
            "fix": {k: _fixed_value(v, f"{where}.fix.{k}") for k, v in fix.items()}}


def policy_of(entry: dict) -> Policy:
    """:returns: the :class:`Policy` of a normalised token entry (see :func:`token_entry`)."""
    return Policy(default=entry["default"], allow=frozenset(entry["allow"]), deny=frozenset(entry["deny"]),
                  fix=dict(entry["fix"]), scopes=frozenset(entry["scopes"]), name=entry["name"])
