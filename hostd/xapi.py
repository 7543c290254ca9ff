"""The xAPI source: ``/xapi/statements`` accepts xAPI 1.0.3 statements as events.

Statements are validated (the structure an LRS must check before storing),
given an ``id`` when they have none (the identity of the event), and logged
with source ``xapi``. ``POST`` answers the list of statement ids; ``PUT`` with
``statementId`` answers 204.
"""
from __future__ import annotations

import re
import uuid

import falcon

from sandbox.errors import InsightsError

from .errors import BadEventBatch
from .eventbody import check_event, decode_body, parse_json
from .resources import read_body

__all__ = ["XAPI_VERSION", "validate_statement", "StatementsResource", "AboutResource", "StatementConflict"]


class StatementConflict(InsightsError):
    """A statement id already stored with different content (xAPI: 409)."""

    code = "conflict"

XAPI_VERSION = "1.0.3"
_IRI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:\S+$")
_IFIS = ("mbox", "mbox_sha1sum", "openid", "account")


def _fail(index, message):
    raise BadEventBatch(index, f"invalid xAPI statement: {message}")


def _check_agent(agent, index, where):
    if not isinstance(agent, dict):
        _fail(index, f"{where} must be an object")
    kind = agent.get("objectType", "Agent")
    ifis = [k for k in _IFIS if k in agent]
    if kind == "Agent" and len(ifis) != 1:
        _fail(index, f"{where} (Agent) needs exactly one of {', '.join(_IFIS)}")
    if kind == "Group" and len(ifis) > 1:
        _fail(index, f"{where} (Group) has more than one identifier")
    if kind == "Group" and not ifis and not isinstance(agent.get("member"), list):
        _fail(index, f"{where} (anonymous Group) needs a member list")
    if kind not in ("Agent", "Group"):
        _fail(index, f"{where} objectType must be Agent or Group")
    if "mbox" in agent and not str(agent["mbox"]).startswith("mailto:"):
        _fail(index, f"{where}.mbox must be a mailto: IRI")
    if "account" in agent:
        account = agent["account"]
        if not isinstance(account, dict) or not account.get("homePage") or not account.get("name"):
            _fail(index, f"{where}.account needs homePage and name")


def validate_statement(statement, index=None, statement_id: str | None = None) -> dict:
    """Check one statement; :returns: it, with an ``id`` (given, from ``statement_id``, or new).

    :raises BadEventBatch: the statement is invalid (the message says why, the index which).
    """
    if not isinstance(statement, dict):
        _fail(index, "a statement must be a JSON object")
    check_event(statement, index)
    for field in ("actor", "verb", "object"):
        if field not in statement:
            _fail(index, f"missing {field!r}")
    _check_agent(statement["actor"], index, "actor")
    verb = statement["verb"]
    if not isinstance(verb, dict) or not isinstance(verb.get("id"), str) or not _IRI.match(verb["id"]):
        _fail(index, "verb.id must be an IRI")
    target = statement["object"]
    if not isinstance(target, dict):
        _fail(index, "object must be an object")
    kind = target.get("objectType", "Activity")
    if kind == "Activity" and (not isinstance(target.get("id"), str) or not _IRI.match(target["id"])):
        _fail(index, "object.id of an Activity must be an IRI")
    if kind in ("Agent", "Group"):
        _check_agent(target, index, "object")
    if "result" in statement and not isinstance(statement["result"], dict):
        _fail(index, "result must be an object")
    if "id" in statement and statement["id"] is None:
        _fail(index, "id must not be null")
    if kind == "StatementRef":
        try:
            uuid.UUID(str(target.get("id")))
        except ValueError:
            _fail(index, "object.id of a StatementRef must be a UUID")
    given = statement.get("id")
    if statement_id is not None:
        if given is not None and str(given) != statement_id:
            _fail(index, "statementId does not match the statement's id")
        given = statement_id
    if given is not None:
        try:
            given = str(uuid.UUID(str(given)))
        except ValueError:
            _fail(index, f"id {given!r} is not a UUID")
    return {**statement, "id": given or str(uuid.uuid4())}


class StatementsResource:
    """``POST /xapi/statements`` (one or a list) and ``PUT /xapi/statements?statementId=``."""

    state_changing = True  # see hostd.origin

    def __init__(self, web):
        self._web = web

    def _read(self, req):
        return parse_json(decode_body(read_body(req, self._web.config)))

    def on_post(self, req, resp):
        document = self._read(req)
        statements = document if isinstance(document, list) else [document]
        if not statements:
            raise BadEventBatch(None, "empty list of statements")
        valid = [validate_statement(s, i if isinstance(document, list) else None)
                 for i, s in enumerate(statements)]
        seen = {}
        for index, statement in enumerate(valid):
            if statement["id"] in seen:
                raise BadEventBatch(index, f"invalid xAPI statement: id {statement['id']} is also the id of"
                                           f" item {seen[statement['id']]}")
            seen[statement["id"]] = index
        answer = self._web.append_events(valid, source="xapi")
        self._check_conflicts(valid, answer)
        resp.set_header("X-Experience-API-Version", XAPI_VERSION)
        resp.media = answer["ids"]

    def on_put(self, req, resp):
        statement_id = req.get_param("statementId")
        if not statement_id:
            raise BadEventBatch(None, "PUT needs the statementId parameter")
        statement = validate_statement(self._read(req), None, statement_id)
        self._check_conflicts([statement], self._web.append_events([statement], source="xapi"))
        resp.set_header("X-Experience-API-Version", XAPI_VERSION)
        resp.status = falcon.HTTP_204

    def _check_conflicts(self, statements, answer) -> None:
        """A statement id already stored with other content is a 409 (xAPI), not a duplicate."""
        if not answer.get("duplicates"):
            return
        stored = self._web.stored_events([s["id"] for s in statements])
        for statement in statements:
            previous = stored.get(statement["id"])
            if previous is not None and previous != statement:
                raise StatementConflict(f"statement {statement['id']} already exists with other content")


class AboutResource:
    """``GET /xapi/about``: the xAPI versions spoken here."""

    def on_get(self, req, resp):
        resp.set_header("X-Experience-API-Version", XAPI_VERSION)
        resp.media = {"version": [XAPI_VERSION]}
