"""``/login``: the dashboard's way to present a token, kept in a cookie.

``GET /login`` is a form; ``POST /login`` with a known token sets the
:data:`~hostd.auth.COOKIE` cookie (HttpOnly, SameSite=Strict, Secure over
HTTPS) holding the token, which :class:`~hostd.auth.Authenticator` then
accepts like an ``Authorization: Bearer`` header, and sends the browser to the
dashboard. A form posted by a page of another origin is refused like any
state-changing request (:mod:`hostd.origin`), so no other site can sign a
browser in under its own token.
"""
from __future__ import annotations

from urllib.parse import parse_qs

import falcon

from .auth import COOKIE
from .resources import read_body

__all__ = ["LoginResource"]


class LoginResource:
    """``GET``/``POST /login``.

    :param web: the web context (its ``config`` bounds the body).
    :param templates: hostd's page templates (``login.html``).
    :param authenticator: the :class:`~hostd.auth.Authenticator` that knows the tokens.
    """

    state_changing = True  # see hostd.origin: only hostd's own page may post the form

    def __init__(self, web, templates, authenticator):
        self._web = web
        self._templates = templates
        self._authenticator = authenticator

    def on_get(self, req, resp):
        self._form(resp, None)

    def on_post(self, req, resp):
        form = parse_qs(read_body(req, self._web.config).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        if not token or self._authenticator.identify(token) is None:
            resp.status = falcon.HTTP_401
            self._form(resp, "This token is not known here.")
            return
        resp.set_cookie(COOKIE, token, path="/", http_only=True, same_site="Strict", secure=req.scheme == "https")
        resp.status = falcon.HTTP_303
        resp.location = "/"

    def _form(self, resp, error):
        resp.content_type = falcon.MEDIA_HTML
        resp.cache_control = ["no-store"]
        resp.text = self._templates.get_template("login.html").render(error=error)
