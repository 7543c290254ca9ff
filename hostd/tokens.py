"""``hostd token new NAME --scopes ...``: a new token and the ``[[auth.tokens]]`` table to paste.

The token is random (32 bytes, URL-safe base64) and printed once; the table
holds only its SHA-256, so the configuration file reveals no token. The table
is checked exactly as hostd will check it at start-up before it is printed.
"""
from __future__ import annotations

import json
import re
import secrets
import tomllib

import click

from .policy import SCOPES, token_digest, token_entry

__all__ = ["token", "new_token", "toml_block"]


def _toml_value(value) -> str:
    """TOML for a string, number, boolean, list or table (JSON's strings are TOML's basic strings)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }" \
            if value else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def toml_block(entry: dict) -> str:
    """:returns: the ``[[auth.tokens]]`` table of a token entry, in the order hostd.toml documents."""
    keys = ("name", "token_sha256", "scopes", "default", "allow", "deny", "fix")
    return "[[auth.tokens]]\n" + "".join(f"{key} = {_toml_value(entry[key])}\n" for key in keys if key in entry)


def new_token(name: str, scopes: list[str], allow=(), deny=(), fix=None, default: str | None = None):
    """Make a token and its configuration entry.

    :param default: ``"allow"`` or ``"deny"``; ``None``: ``"deny"`` when ``allow`` names
        something, else ``"allow"`` (the token may use every view and query its scopes cover).
    :returns: ``(token, TOML block)``.
    :raises ValueError: a bad name, scope or value (as hostd would refuse it at start-up).
    """
    token = secrets.token_urlsafe(32)
    entry = {"name": name, "token_sha256": token_digest(token), "scopes": list(scopes),
             "default": default or ("deny" if allow else "allow"), "allow": list(allow), "deny": list(deny),
             "fix": dict(fix or {})}
    block = toml_block(entry)
    token_entry(tomllib.loads(block)["auth"]["tokens"][0], "token")  # exactly what hostd will read
    return token, block


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _fixed(pairs) -> dict:
    fix = {}
    for pair in pairs:
        param, sep, value = pair.partition("=")
        if not sep or not param.strip():
            raise click.BadParameter(f"{pair!r} is not PARAM=VALUE", param_hint="--fix")
        fix[param.strip()] = value
    return fix


@click.group()
def token():
    """Tokens for hostd's [auth] configuration."""


@token.command("new")
@click.argument("name")
@click.option("--scopes", required=True, help=f"Comma-separated, of: {', '.join(SCOPES)}.")
@click.option("--allow", default="", help="View and query names the token may use (comma-separated).")
@click.option("--deny", default="", help="Names it may not use (comma-separated).")
@click.option("--default", "default", type=click.Choice(["allow", "deny"]),
              help="Names in neither list (default: deny with --allow, else allow).")
@click.option("--fix", "fix", multiple=True, metavar="PARAM=VALUE",
              help="A parameter forced in every call (repeatable), e.g. --fix course=6.002x.")
def new(name, scopes, allow, deny, default, fix):
    """Print a new token once, and the [[auth.tokens]] table to paste into hostd's configuration."""
    try:
        secret, block = new_token(name, _names(scopes), _names(allow), _names(deny), _fixed(fix), default)
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    click.echo("Token (shown once; hostd keeps only its SHA-256). Send it as Authorization: Bearer <token>:")
    click.echo(secret)
    click.echo("\nPaste this into hostd's configuration file and restart hostd:\n")
    click.echo(block, nl=False)
