"""The other hostd nodes a node answers for: the ``[[peers]]`` tables of the configuration.

Each table names one node by its base URL, optionally with the token this node
presents to it. :func:`peer_entries` checks the tables when the configuration
loads (naming the key of anything wrong); :class:`Peer` is one checked table.
What a node does with its peers is :mod:`hostd.federation`'s business.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["PEER_FIELDS", "Peer", "peer_entries", "peers_of"]

#: The keys of one ``[[peers]]`` table: ``(key, meaning)``; ``conf/hostd.toml`` documents each.
PEER_FIELDS = (
    ("url", "the peer's base URL, http:// or https://, as its own clients reach it"),
    ("token", "the token this node presents to the peer (Authorization: Bearer); omit if it needs none"),
    ("timeout_s", "how long to wait for the peer to accept a connection, and for its /schema"),
    ("schema_cache_s", "how long the peer's list of views and queries is reused before it is asked again"),
)
_KEYS = frozenset(key for key, _ in PEER_FIELDS)
_DEFAULTS = {"token": None, "timeout_s": 5.0, "schema_cache_s": 3.0}


@dataclass(frozen=True)
class Peer:
    """One other node.

    :param url: its base URL, without a trailing slash.
    :param token: sent to it as ``Authorization: Bearer``; ``None``: nothing is sent.
    :param timeout_s: how long to wait for it to accept a connection (and for its ``/schema``).
    :param schema_cache_s: how long its ``/schema`` answer is reused.
    """

    url: str
    token: str | None = None
    timeout_s: float = _DEFAULTS["timeout_s"]
    schema_cache_s: float = _DEFAULTS["schema_cache_s"]

    def __repr__(self):  # never show the token (logs, tracebacks)
        return f"Peer({self.url!r})"


def _url(value, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}.url must be a string, got {value!r}")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"{where}.url must be an http:// or https:// base URL like http://10.0.0.2:8000,"
                         f" got {value!r}")
    if parts.username or parts.password:
        raise ValueError(f"{where}.url must not carry credentials (give the peer's token as token), got a URL"
                         " with user info")
    return value.strip().rstrip("/")


def _seconds(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where} must be a number of seconds above 0, got {value!r}")
    return float(value)


def peer_entries(tables, where: str) -> list[dict]:
    """Check the ``[[peers]]`` tables and normalise them.

    :param where: how to name them in errors (``"hostd.toml: peers"``).
    :returns: one dict per peer with every key of :data:`PEER_FIELDS` (``url`` without a
        trailing slash, ``token`` ``None`` when absent, the seconds as floats).
    :raises ValueError: not a list of tables, an unknown or missing key, an ill-typed value,
        or two peers with the same URL (the message names it).
    """
    if not isinstance(tables, list):
        raise ValueError(f"{where} must be [[peers]] tables, got {tables!r}")
    entries, seen = [], {}
    for index, table in enumerate(tables):
        here = f"{where}[{index}]"
        if not isinstance(table, dict):
            raise ValueError(f"{here} must be a table ([[peers]]), got {table!r}")
        unknown = sorted(set(table) - _KEYS)
        if unknown:
            raise ValueError(f"{here}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
        if "url" not in table:
            raise ValueError(f"{here} needs a url")
        entry = {**_DEFAULTS, "url": _url(table["url"], here)}
        token = table.get("token")
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise ValueError(f"{here}.token ({entry['url']}) must be a non-empty string")
        entry["token"] = token
        for key in ("timeout_s", "schema_cache_s"):
            if key in table:
                entry[key] = _seconds(table[key], f"{here}.{key}")
        if entry["url"] in seen:
            raise ValueError(f"{here} has the same url as [{seen[entry['url']]}]: {entry['url']}")
        seen[entry["url"]] = index
        entries.append(entry)
    return entries


def peers_of(entries: list[dict]) -> list[Peer]:
    """:returns: the :class:`Peer` of each checked entry (see :func:`peer_entries`), in order."""
    return [Peer(**entry) for entry in entries]
