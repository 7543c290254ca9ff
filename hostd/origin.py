"""Refusing state-changing requests forged by web pages (cross-site request forgery).

hostd on loopback asks for no credentials, so any page open in a local user's
browser could post events to it: a cross-site ``POST`` with ``text/plain`` needs
no CORS preflight. Browsers say who sent a request: ``Origin`` on every
cross-origin ``POST``, and ``Sec-Fetch-Site`` on every request (``GET`` too,
for an ``<img src=".../event?msg=...">``). Programs such as
``logging.handlers.HTTPHandler``, ``requests`` or ``curl`` send neither, and
keep working.

A resource opts in with ``state_changing = True``; :class:`OriginGuard` then
refuses its requests whose ``Origin`` is not hostd's own (the loopback names or
the bound address, at the port the request came in on) or whose
``Sec-Fetch-Site`` says another site sent them.
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from .errors import ForeignOrigin

__all__ = ["OriginGuard", "is_loopback"]

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_FOREIGN_FETCH_SITES = frozenset({"cross-site", "same-site"})  # same-site: another port or subdomain


def is_loopback(host: str) -> bool:
    """:returns: whether ``host`` (an address, or ``localhost``) is this machine's loopback."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class OriginGuard:
    """Falcon middleware: 403 ``foreign_origin`` for state-changing requests from other origins.

    :param bind: the address hostd serves on (``server.bind``).
    """

    def __init__(self, bind: str):
        self._own_hosts = _LOOPBACK_NAMES | ({bind} if bind not in ("0.0.0.0", "::", "") else set())
        self._loopback = is_loopback(bind)

    def process_resource(self, req, resp, resource, params):
        """Check the request before a state-changing resource sees it.

        :raises ForeignOrigin: another origin sent it.
        """
        if not getattr(resource, "state_changing", False):
            return
        fetch_site = (req.get_header("Sec-Fetch-Site") or "").lower()
        if fetch_site in _FOREIGN_FETCH_SITES:
            raise ForeignOrigin(f"{req.method} {req.path} refused: the browser says a page of another"
                                f" site sent it (Sec-Fetch-Site: {fetch_site})")
        origin = req.get_header("Origin")
        if origin is not None and not self._own(origin, req):
            raise ForeignOrigin(f"{req.method} {req.path} refused: sent by a page of {origin[:100]!r},"
                                " not of this server")

    def _own(self, origin: str, req) -> bool:
        try:
            parts = urlsplit(origin)
            port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
        except ValueError:  # "null" (sandboxed frames, file: pages) or garbage
            return False
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        sock = req.env.get("gunicorn.socket")
        local_port = sock.getsockname()[1] if sock is not None else int(req.env.get("SERVER_PORT") or 0)
        if parts.hostname in self._own_hosts and port == local_port:
            return True
        # Bound beyond loopback, hostd may be reached under any name: its own page then names
        # the host the browser asked for. (On loopback that would let DNS rebinding through.)
        return not self._loopback and f"{parts.hostname}:{port}" == f"{req.host}:{req.port}"
