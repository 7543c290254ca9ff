"""A real ``hostd serve`` tried from outside with hostile HTTP: bad values, bad framing, slow
clients, forged cross-site requests, a segfault, a store that stops answering.

One daemon for the file runs ``tests/hostile_http_modules``: ``http_probe`` (a
handler that records every event it receives, typed queries, a query that
segfaults) and ``http_broken`` (fails at import). Whether anything of a refused
request reached the event log is told by the handler: it receives every logged
event in log order, so once a marker event posted afterwards has reached it, any
event logged before would have too.

Tests poll with deadlines and use generous client timeouts; none asserts a
duration. The store is paused by the last test, which puts it back.
"""
from __future__ import annotations

import json
import logging
import logging.handlers
import random
import signal
import socket
import threading
import uuid
from contextlib import closing, contextmanager
from pathlib import Path

import psutil
import pytest
import requests

from running_hostd import start_daemon, stop_daemon, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MODULES = Path(__file__).resolve().parent / "hostile_http_modules"
BODY_TIMEOUT_S = 2
QUICK_S = 5  # a client timeout that only an answer blocked behind something else could miss
INTERNALS = ("seq", "eid", "ObjectId", "received", "Traceback", "BulkWriteError")


@pytest.fixture(scope="module")
def hostd(tmp_path_factory):
    daemon = start_daemon(tmp_path_factory.mktemp("hostile_http"), MODULES, {"http_probe"}, {"http_broken"},
                          server=f"body_timeout_s = {BODY_TIMEOUT_S}\n")
    daemon.port = int(daemon.base.rsplit(":", 1)[1])
    try:
        yield daemon
    finally:
        stop_daemon(daemon)


# -- helpers ---------------------------------------------------------------------------

def assert_error(response, status: int, code: str) -> str:
    """Check a JSON error answer. :returns: its message, checked for leaked internals."""
    assert response.status_code == status, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["code"] == code, error
    for word in INTERNALS:
        assert word not in error["message"], error
    return error["message"]


def post_json_text(hostd, path: str, text, **kwargs):
    """POST ``text`` (str or bytes, sent as it is) as JSON."""
    return hostd.post(path, data=text.encode("utf-8") if isinstance(text, str) else text,
                      headers={"Content-Type": "application/json"}, **kwargs)


def sandbox_identity(hostd) -> tuple:
    """:returns: ``(pid, restarts)`` of ``http_probe``'s sandbox: what a restart changes."""
    entry = hostd.modules()["http_probe"]
    return entry["pid"], entry["restarts"]


def settle_log(hostd) -> int:
    """Post a marker event and wait until the handler received it.

    :returns: how many events the handler had received, all told, the marker included.
    """
    marker = f"marker-{uuid.uuid4().hex}"
    response = hostd.post("/event", json={"marker": marker})
    assert response.status_code == 202, response.text
    wait_until(lambda: hostd.query("seen", marker=marker) == 1, 30, what="the marker event handled")
    return hostd.query("seen_total")


@contextmanager
def nothing_logged(hostd):
    """Check that what the block does adds nothing to the event log."""
    before = settle_log(hostd)
    yield
    assert settle_log(hostd) == before + 1  # the second marker only


def raw_request(port: int, head: bytes, body: bytes = b"", shut_write: bool = False) -> socket.socket:
    """Open a connection and send ``head`` (the request line and headers) then ``body``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head + b"\r\n" + body)
    if shut_write:
        sock.shutdown(socket.SHUT_WR)
    return sock


def read_answer(sock: socket.socket) -> tuple[int, bytes]:
    """:returns: ``(status, body)`` of the answer on ``sock``, read until the server closes it."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def nested(levels: int) -> str:
    """A JSON object ``levels`` deep."""
    return '{"a": ' * (levels - 1) + "{}" + "}" * (levels - 1)


def statement(**more) -> dict:
    """A valid xAPI statement."""
    return {"actor": {"mbox": f"mailto:{uuid.uuid4().hex[:8]}@example.com"},
            "verb": {"id": "http://adlnet.gov/expapi/verbs/experienced"},
            "object": {"id": f"http://example.com/activities/{uuid.uuid4()}"}, **more}


# -- a batch is all or nothing ---------------------------------------------------------

def test_a_batch_with_a_bad_item_stores_nothing(hostd):
    first = f"p1-{uuid.uuid4().hex}"
    with nothing_logged(hostd):
        message = assert_error(post_json_text(hostd, "/event", f'[{{"id": "{first}"}}, {{"a": NaN}}]'),
                               400, "bad_event")
        assert message.startswith("item 1: ") and "NaN" in message, message
    # the good first item was not logged: alone, it is new
    assert hostd.post("/event", json={"id": first}).json() == {"accepted": 1, "duplicates": 0, "ids": [first]}


def test_an_xapi_statement_list_with_a_bad_statement_stores_nothing(hostd):
    good = statement(id=str(uuid.uuid4()))
    with nothing_logged(hostd):
        text = json.dumps([good, statement(result={"score": {"raw": 0}})]).replace('"raw": 0', '"raw": Infinity')
        message = assert_error(post_json_text(hostd, "/xapi/statements", text), 400, "bad_event")
        assert message.startswith("item 1: ") and "Infinity" in message, message
    response = hostd.post("/xapi/statements", json=good)
    assert response.status_code == 200 and response.json() == [good["id"]], response.text


# -- values the store cannot hold ----------------------------------------------------------

@pytest.mark.parametrize("value, words", [
    ("NaN", ["NaN"]), ("Infinity", ["Infinity"]), ("-Infinity", ["-Infinity"]), ("1e999", ["1e999"]),
    ("18446744073709551616", ["64-bit integer"]), ("-9223372036854775809", ["64-bit integer"]),
    ('{"k\\u0000": 1}', ["NUL"]), ('{"$gt": 1}', ["'$gt'"]), ('"\\ud800"', ["surrogate"]),
    (nested(150), ["deeper than"]), (nested(600), ["deeper than"]),
])
def test_values_the_store_cannot_hold_are_a_400_naming_the_item(hostd, value, words):
    with nothing_logged(hostd):
        text = f'[{{"marker": "fine"}}, {{"marker": "bad", "value": {value}}}]'
        message = assert_error(post_json_text(hostd, "/event", text), 400, "bad_event")
        assert message.startswith("item 1: "), message
        for word in words:
            assert word in message, message
        statement_text = json.dumps(statement(result={"extensions": {"http://x.example/v": "HERE"}}))
        message = assert_error(post_json_text(hostd, "/xapi/statements", statement_text.replace('"HERE"', value)),
                               400, "bad_event")
        for word in words:
            assert word in message, message


# -- parameters are checked by hostd -------------------------------------------------------

@pytest.mark.parametrize("how, params", [
    ("body", '{"limit": 1e999}'), ("body", '{"limit": 1e300}'), ("body", '{"limit": 2.5}'),
    ("body", '{"limit": 99999999999999999999999}'), ("body", '{"limit": NaN}'), ("body", '{"ratio": 1e999}'),
    ("query", "limit=1e999"), ("query", "ratio=inf"), ("query", "ratio=nan"), ("query", "tags=1&tags=x"),
    ("query", "limit=" + "9" * 40), ("query", "flag=maybe"),
])
def test_an_unconvertible_parameter_is_a_400_that_never_reaches_the_sandbox(hostd, how, params):
    before = sandbox_identity(hostd)
    if how == "body":
        response = post_json_text(hostd, "/query/typed", params)
    else:
        response = hostd.get(f"/query/typed?{params}", timeout=QUICK_S)
    message = assert_error(response, 400, "bad_parameter")
    name = (params.split('"')[1] if how == "body" else params.split("=")[0])
    assert response.json()["error"]["param"] == name and repr(name) in message, message
    assert sandbox_identity(hostd) == before  # the sandbox was neither killed nor restarted


def test_unconvertible_parameters_at_once_leave_the_daemon_answering(hostd):
    before = sandbox_identity(hostd)
    answers = []

    def bad_call():
        answers.append(post_json_text(hostd, "/query/typed", '{"limit": 1e999}', timeout=QUICK_S).status_code)
    threads = [threading.Thread(target=bad_call) for _ in range(4)]
    for thread in threads:
        thread.start()
    assert hostd.get("/healthz", timeout=QUICK_S).status_code == 200
    for thread in threads:
        thread.join()
    assert answers == [400] * 4
    assert hostd.query("typed", limit=3.0, ratio=0.5, tags=["1", 2]) == \
        {"limit": 3, "ratio": 0.5, "flag": False, "tags": [1, 2]}
    assert sandbox_identity(hostd) == before


# -- framing of the body ---------------------------------------------------------------------

def test_a_body_shorter_than_its_content_length_is_a_400(hostd):
    event = json.dumps({"marker": f"short-{uuid.uuid4().hex}"}).encode()
    with nothing_logged(hostd):
        head = (f"POST /event HTTP/1.1\r\nHost: 127.0.0.1:{hostd.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(event) + 50}\r\n").encode()
        with closing(raw_request(hostd.port, head, event, shut_write=True)) as sock:
            status, body = read_answer(sock)
        assert status == 400, body
        assert json.loads(body)["error"]["code"] == "bad_body"


def test_a_chunked_body_is_read_whole(hostd):
    marker = f"chunked-{uuid.uuid4().hex}"
    parts = [b'[{"marker": "', marker.encode(), b'", "n": 1}, {"marker": "', marker.encode(), b'", "n": 2}]']
    response = hostd.post("/event", data=iter(parts), headers={"Content-Type": "application/json"})
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 2
    wait_until(lambda: hostd.query("seen", marker=marker) == 2, 30, what="both chunked events handled")
    query = hostd.post("/query/typed", data=iter([b'{"limit"', b": 7}"]), headers={"Content-Type": "application/json"})
    assert query.status_code == 200 and query.json()["limit"] == 7, query.text


# -- slow clients ------------------------------------------------------------------------------

def test_slow_clients_hold_neither_the_api_nor_health(hostd):
    head = (f"POST /event HTTP/1.1\r\nHost: 127.0.0.1:{hostd.port}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n").encode()
    slow = [raw_request(hostd.port, head, b"{") for _ in range(16)]
    try:
        assert hostd.get("/healthz", timeout=QUICK_S).status_code == 200
        assert hostd.get("/query/trivial", timeout=QUICK_S).json() == 1
        assert hostd.post("/query/trivial", json={}, timeout=QUICK_S).json() == 1
        # a client that stopped sending is answered 408 and its connection closed
        status, body = read_answer(slow[0])
        assert status == 408, body
        assert json.loads(body)["error"]["code"] == "body_timeout"
    finally:
        for sock in slow:
            sock.close()


# -- errors of the contract ------------------------------------------------------------------

def test_a_sandbox_dying_of_a_segfault_during_the_call_is_502(hostd):
    pid, restarts = sandbox_identity(hostd)
    assert_error(hostd.get("/query/segv"), 502, "crashed")

    def restarted():
        entry = hostd.modules()["http_probe"]
        return entry if entry["state"] == "running" and entry["restarts"] > restarts else None
    entry = wait_until(restarted, 30, what="http_probe restarted after the segfault")
    assert entry["pid"] != pid
    wait_until(lambda: hostd.get("/query/trivial").status_code == 200, 30, what="http_probe answering")


def test_an_unknown_name_names_the_modules_that_failed_to_load(hostd):
    message = assert_error(hostd.get("/query/defined_nowhere"), 404, "not_found")
    assert "defined_nowhere" in message and "http_broken" in message, message
    message = assert_error(hostd.get("/view/defined_nowhere"), 404, "not_found")
    assert "http_broken" in message, message


# -- requests forged by web pages ------------------------------------------------------------

@pytest.mark.parametrize("method, path, body", [
    ("POST", "/event", '{"marker": "forged"}'),
    ("POST", "/xapi/statements", json.dumps(statement())),
    ("POST", "/modules/http_probe/dead_letters/retry", ""),
    ("GET", "/event?msg=%7B%22marker%22%3A+%22forged%22%7D", ""),
])
@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:1"},
    {"Origin": "http://localhost.evil.example"}, {"Sec-Fetch-Site": "cross-site"},
])
def test_a_cross_site_request_is_refused(hostd, method, path, body, headers):
    with nothing_logged(hostd):
        response = hostd.request(method, path, data=body, headers={"Content-Type": "text/plain", **headers})
        assert_error(response, 403, "foreign_origin")


def test_own_pages_and_programs_may_post(hostd):
    marker = f"own-{uuid.uuid4().hex}"
    for origin in (hostd.base, f"http://localhost:{hostd.port}"):
        response = hostd.post("/event", json={"marker": marker, "origin": origin},
                              headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"})
        assert response.status_code == 202, response.text
    # a query changes nothing: a page of any origin may still ask (it cannot read the answer)
    assert hostd.post("/query/trivial", json={}, headers={"Origin": "http://evil.example"}).json() == 1
    logger = logging.getLogger(f"insights.hostile.{marker}")
    logger.propagate = False
    handler = logging.handlers.HTTPHandler(f"127.0.0.1:{hostd.port}", "/event", method="POST")
    logger.addHandler(handler)
    try:
        logger.warning(json.dumps({"marker": marker, "origin": "HTTPHandler"}))
    finally:
        logger.removeHandler(handler)
        handler.close()
    wait_until(lambda: hostd.query("seen", marker=marker) == 3, 30, what="the three events handled")


# -- many malformed bodies ------------------------------------------------------------------------

_BAD_VALUES = ["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "9223372036854775808", "-9223372036854775809",
               "123456789012345678901234567890", '"\\udc80"', '{"\\u0000": 1}', '{"$set": 1}', nested(120)]


def _malformed(rng: random.Random, xapi: bool) -> bytes:
    """One body that must be refused, of a kind drawn by ``rng``."""
    good = json.dumps(statement() if xapi else {"marker": "fuzz", "n": rng.randrange(10 ** 6)})
    kind = rng.randrange(7)
    if kind == 0:  # a bad value somewhere in an otherwise good item, alone or in a batch
        item = good[:-1] + f', "v{rng.randrange(9)}": {rng.choice(_BAD_VALUES)}}}'
        return (f"[{good}, {item}]" if rng.random() < 0.5 else item).encode()
    if kind == 1:  # random bytes
        while True:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 120)))
            try:
                json.loads(data)
            except ValueError:
                return data
    if kind == 2:  # wrong types
        return rng.choice([b"3", b"null", b"true", b'"text"', b"[]", b"[1]", b"[[]]", b"[null]",
                           f"[{good}, 7]".encode(), f'[{good}, "{{not json"]'.encode(), b"{}" if xapi else b"[3.5]"])
    if kind == 3:  # truncated
        return good[:rng.randrange(1, len(good))].encode()
    if kind == 4:  # not UTF-8
        return good[:-1].encode() + b', "x": "\xff\xfe"}'
    if kind == 5:  # a lone surrogate escaped in a key
        return (good[:-1] + ', "\\ud8' + f'{rng.randrange(16):x}0": 1}}').encode()
    if xapi:  # structure: xAPI rules
        return json.dumps({**statement(), "verb": {"id": "not an IRI"}}).encode()
    depth = rng.randrange(99, 700)  # the event is the first level
    return (good[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}").encode()


def test_a_thousand_malformed_bodies_are_4xx_and_log_nothing(hostd):
    rng = random.Random(20261203)
    answers = {}
    with nothing_logged(hostd), requests.Session() as session:
        for number in range(1000):
            xapi = number % 3 == 0
            body = _malformed(rng, xapi)
            response = session.post(hostd.base + ("/xapi/statements" if xapi else "/event"), data=body,
                                    headers={"Content-Type": "application/json"}, timeout=30)
            answers[response.status_code] = answers.get(response.status_code, 0) + 1
            assert 400 <= response.status_code < 500, (body[:300], response.status_code, response.text)
            assert response.json()["error"]["code"] == "bad_event", response.text
    assert sum(answers.values()) == 1000 and hostd.get("/healthz").status_code == 200


# -- the store stops answering (last: it pauses the store) ----------------------------------------------

def test_a_store_that_does_not_answer_is_503(hostd):
    store = [p for p in psutil.Process(hostd.process.pid).children(recursive=True)
             if "nx_27017" in " ".join(p.cmdline())]
    assert len(store) == 1, store
    store[0].send_signal(signal.SIGSTOP)
    try:
        response = hostd.post("/event", json={"marker": f"down-{uuid.uuid4().hex}"}, timeout=120)
        message = assert_error(response, 503, "store_unavailable")
        assert "unavailable" in message
    finally:
        store[0].send_signal(signal.SIGCONT)
    wait_until(lambda: hostd.post("/event", json={"marker": "store back"}).status_code == 202, 60,
               what="the store answering again")
