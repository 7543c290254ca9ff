"""Tokens: who calls, and what their token lets them do.

:class:`Authenticator` is a Falcon middleware. For each request it finds the
scope its route needs (:data:`ROUTE_SCOPES`; a route not listed there needs
``admin``, so a new route is closed until someone decides otherwise), reads the
token the request presents (``Authorization: Bearer``, else the dashboard's
login cookie), and either refuses the request (401 ``unauthorized``, 403
``forbidden``) or leaves the token's :class:`~hostd.policy.Policy` in
``req.context.policy`` for the resources, which hide denied names and force
fixed parameters.

A presented token is always applied, on loopback too: an unknown one is 401,
its scopes and policy hold. Without a token, a request passes with the
:data:`~hostd.policy.OPEN` policy when no token is required (``auth.required``:
``auto`` on a loopback address, or ``never``), and is 401 otherwise; the
dashboard (``/``) then sends people to ``/login`` instead.

Tokens are kept as their SHA-256: the presented token is hashed and compared
with every configured hash with :func:`hmac.compare_digest`, so neither a match
nor its position shows in the time taken.
"""
from __future__ import annotations

import hashlib
import hmac

import falcon

from .config import Config, ConfigError
from .errors import Forbidden, Unauthorized
from .origin import is_loopback
from .policy import OPEN, Policy, policy_of

__all__ = ["Authenticator", "ROUTE_SCOPES", "COOKIE", "LOGIN_PATH", "auth_required", "check_bind",
           "request_policy"]

#: The scope each route needs, by URI template. ``None``: no token at all (a signed URL or
#: the login page carry their own proof); ``""``: any known token; a route not listed: ``admin``.
ROUTE_SCOPES = {
    "/healthz": None, "/fs/{module}/{path:path}": None, "/xapi/about": None, "/login": None,
    "/assets/{file}": None,  # hostd's own script and stylesheet (the login page uses them too)
    "/": "", "/schema": "", "/openapi.json": "", "/event_properties": "", "/static/{module}/{path:path}": "",
    "/view/{name}": "views", "/query/{name}": "queries",
    "/event": "events:write", "/xapi/statements": "events:write",
    "/metrics": "admin",
}
_ADMIN = "admin"
#: The cookie the login form sets: the token itself, HttpOnly and SameSite=Strict.
COOKIE = "insights_token"
LOGIN_PATH = "/login"
_REALM = 'Bearer realm="insights"'


def auth_required(config: Config) -> bool:
    """:returns: whether requests without a token are refused (``auth.required``, and for
        ``auto`` whether ``server.bind`` is beyond loopback)."""
    required = config["auth.required"]
    return required == "always" or (required == "auto" and not is_loopback(config["server.bind"]))


def check_bind(config: Config) -> None:
    """Refuse a configuration that would serve everyone, or no one.

    :raises ConfigError: bound beyond loopback with no token and ``auth.required`` not
        ``"never"``; or ``"always"`` with no token (every request would be refused).
    """
    if config["auth.tokens"]:
        return
    bind, required = config["server.bind"], config["auth.required"]
    if required == "always":
        raise ConfigError('[auth] required = "always" but no [[auth.tokens]] is configured: every request'
                          " would be refused; add a token (hostd token new NAME --scopes ...)")
    if required == "auto" and not is_loopback(bind):
        raise ConfigError(f"[auth] refusing to serve on {bind} without tokens: anyone who can reach it could"
                          " read every view and query and post events. Add [[auth.tokens]]"
                          ' (hostd token new NAME --scopes ...), bind to 127.0.0.1, or set [auth] required = "never"'
                          " if something in front of hostd checks callers")


def request_policy(req) -> Policy:
    """:returns: the policy :class:`Authenticator` left for this request (:data:`OPEN` if none)."""
    return req.context.get("policy", OPEN)


class Authenticator:
    """Falcon middleware: 401/403 by route and token, and the token's policy in ``req.context``.

    :param config: the configuration (``auth.required``, ``auth.tokens``, ``server.bind``).
    """

    def __init__(self, config: Config):
        self._required = auth_required(config)
        self._tokens = [(bytes.fromhex(entry["token_sha256"]), policy_of(entry)) for entry in config["auth.tokens"]]

    def identify(self, token: str) -> Policy | None:
        """:returns: the policy of ``token``, or ``None`` if it is not a configured one.

        Every configured hash is compared, whether or not one matched already.
        """
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found = None
        for known, policy in self._tokens:
            if hmac.compare_digest(digest, known):
                found = policy
        return found

    def process_resource(self, req, resp, resource, params):
        """Admit or refuse the request before its resource sees it.

        :raises Unauthorized: no token where one is required, or an unknown one.
        :raises Forbidden: the token lacks the route's scope.
        """
        if resource is None:
            return  # no route: Falcon answers 404
        scope = ROUTE_SCOPES.get(req.uri_template, _ADMIN)
        if scope is None:
            return
        try:
            req.context.policy = self._admit(req, scope)
        except Unauthorized:
            if req.uri_template != "/" or req.method not in ("GET", "HEAD"):
                raise
            resp.status = falcon.HTTP_303  # people, in a browser: the login form
            resp.location = LOGIN_PATH
            resp.complete = True

    def _admit(self, req, scope: str) -> Policy:
        token = _presented(req)
        if token is None:
            if self._required:
                raise Unauthorized(f"{req.method} {req.path} needs a token (Authorization: Bearer <token>)",
                                   _REALM)
            return OPEN
        policy = self.identify(token)
        if policy is None:
            raise Unauthorized("unknown token", f'{_REALM}, error="invalid_token"')
        if scope and not policy.has_scope(scope):
            raise Forbidden(f"token {policy.name!r} lacks the scope {scope!r} for {req.method} {req.path}",
                            f'{_REALM}, error="insufficient_scope", scope="{scope}"')
        return policy


def _presented(req) -> str | None:
    """:returns: the request's token: ``Authorization: Bearer``, else the login cookie, else ``None``.

    An ``Authorization`` header of another scheme (``Basic``, from a proxy in front of
    hostd that checks callers itself) is not a token of hostd's, and is left alone.
    """
    scheme, _, token = (req.get_header("Authorization") or "").strip().partition(" ")
    if scheme.lower() == "bearer":
        return token.strip()
    cookies = req.get_cookie_values(COOKIE)
    return cookies[0] if cookies else None
