"""A real sandbox subprocess over real ZeroMQ sockets, without hostd.

The test plays hostd's part: it binds the upcall ROUTER, writes the spec file,
starts ``python -m sandbox SPEC``, and talks to the sandbox's call socket with a
DEALER, signing frames with the channel key.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import msgpack
import pytest

from sandbox.errors import error_from_reply
import zmq

from sandbox import protocol

pytestmark = pytest.mark.timeout(60)

#: Upper bound for a message we expect (start-up imports included); not a timing assertion.
WAIT_S = 30.0
#: How long we listen for a reply that must not come.
SILENCE_MS = 500

PROBE = """
    import numpy
    from sandbox import query, view

    @query(name=["add", "plus"])
    def add(a: int, b: int = 1):
        '''Adds two numbers.'''
        return a + b

    @query()
    def arange(n: int):
        return numpy.arange(n, dtype=numpy.int64)

    @query()
    def extras(params, flag: bool = False):
        return {"flag": flag, "params": params}

    @view()
    def hello(user: str):
        return f"<p>Hello {user}</p>"

    @query()
    def explode():
        raise ValueError("secret-detail-1234 must not reach the caller")

    @query()
    def relay(query, x: int):
        return query.remote_thing(x=x)

    @query()
    def not_sendable():
        return object()
"""

MANIFEST = """
    [module]
    description = "A probe"
    version = "1.2.3"
"""


class Sandbox:
    """One sandbox process and the sockets hostd would hold."""

    def __init__(self, tmp_path, context, source, name="probe", manifest=None):
        self.name = name
        self.key = protocol.new_key()
        self.signer = protocol.Signer(self.key)
        folder = tmp_path / "modules" / name
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text(textwrap.dedent(source), encoding="utf-8")
        if manifest:
            (folder / "module.toml").write_text(textwrap.dedent(manifest), encoding="utf-8")
        self.call_endpoint = f"ipc://{tmp_path}/{name}.call.sock"
        self.upcall_endpoint = f"ipc://{tmp_path}/up.sock"
        self.router = context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(self.upcall_endpoint)
        self.dealer = None
        self._context = context
        self.spec = {
            "module": name, "module_dir": str(folder), "key": self.key.hex(),
            "call_endpoint": self.call_endpoint, "upcall_endpoint": self.upcall_endpoint,
            "store_url": "mongodb://127.0.0.1:1/", "db_name": f"mod_{name}",
            "fs_root": str(tmp_path / "data" / name / "fs"), "fs_key": os.urandom(32).hex(),
            "parent_pid": os.getpid(), "log_level": "INFO", "call_timeout_s": 10.0,
        }
        spec_path = tmp_path / f"{name}.spec.json"
        fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(self.spec, handle)
        self.log_path = tmp_path / f"{name}.log"
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen([sys.executable, "-m", "sandbox", str(spec_path)],
                                            stdin=subprocess.DEVNULL, stdout=log_file,
                                            stderr=subprocess.STDOUT, cwd=tmp_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    # -- the upcall side (hostd's ROUTER) -------------------------------------
    def receive_upcall(self, wanted: str, timeout_s: float = WAIT_S):
        """:returns: ``(identity frames, message)`` of the next upcall of type ``wanted``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.router.poll(100):
                identity, body = protocol.split_envelope(self.router.recv_multipart())
                message = self.signer.unpack(body)
                if message["type"] == wanted:
                    return identity, message
            elif self.process.poll() is not None and not self.router.poll(0):
                break
        raise AssertionError(f"no {wanted!r} upcall; sandbox exit status {self.process.poll()};"
                             f" log:\n{self.log()}")

    def wait_ready(self) -> dict:
        identity, message = self.receive_upcall("ready")
        assert identity == [self.name.encode()]
        self.dealer = self._context.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(self.call_endpoint)
        return message

    # -- the call side (hostd's DEALER) ----------------------------------------
    def send(self, message: dict) -> dict:
        self.dealer.send_multipart(self.signer.pack(message))
        return message

    def reply(self, timeout_s: float = WAIT_S) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.dealer.poll(100):
                return self.signer.unpack(self.dealer.recv_multipart())
            if self.process.poll() is not None:
                break
        raise AssertionError(f"no reply; sandbox exit status {self.process.poll()}; log:\n{self.log()}")

    def call(self, kind: str, name: str, **params) -> dict:
        request = self.send(protocol.request("call", 10.0, kind=kind, name=name, params=params))
        reply = self.reply()
        assert reply["id"] == request["id"]
        assert reply["type"] == "call_reply"
        return reply

    def assert_silent(self) -> None:
        """Nothing comes back within :data:`SILENCE_MS` and the process is alive."""
        assert not self.dealer.poll(SILENCE_MS), self.signer.unpack(self.dealer.recv_multipart())
        assert self.process.poll() is None, self.log()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self.router.close(0)
        if self.dealer is not None:
            self.dealer.close(0)


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def start(tmp_path, context):
    started = []

    def start(source=PROBE, **kwargs):
        sandbox = Sandbox(tmp_path, context, source, **kwargs)
        started.append(sandbox)
        return sandbox

    yield start
    for sandbox in started:
        sandbox.kill()


@pytest.fixture
def probe(start):
    sandbox = start(PROBE, manifest=MANIFEST)
    sandbox.ready = sandbox.wait_ready()
    return sandbox


# -- start-up ------------------------------------------------------------------

def test_ready_describes_the_module(probe):
    ready = probe.ready
    assert ready["v"] == protocol.VERSION
    assert ready["module"] == "probe"
    assert ready["pid"] == probe.process.pid
    assert ready["manifest"] == {"description": "A probe", "version": "1.2.3"}
    endpoints = {(e["class"], e["name"]): e for e in ready["endpoints"]}
    assert set(endpoints) == {("query", "add"), ("query", "arange"), ("query", "extras"),
                              ("view", "hello"), ("query", "explode"), ("query", "relay"),
                              ("query", "not_sendable")}
    add = endpoints[("query", "add")]
    assert add["aliases"] == ["plus"]
    assert add["doc"] == "Adds two numbers."
    assert add["category"] == "a+b"
    assert [p["name"] for p in add["params"]] == ["a", "b"]
    assert endpoints[("query", "relay")]["params"] == [
        {"name": "x", "type": "int", "required": True, "default": None}]


def test_spec_key_is_not_on_the_command_line(probe):
    with open(f"/proc/{probe.process.pid}/cmdline", "rb") as handle:
        cmdline = handle.read()
    assert probe.key.hex().encode() not in cmdline


# -- calls ---------------------------------------------------------------------

def test_query_and_view_calls(probe):
    reply = probe.call("query", "add", a="2", b=3)
    assert reply["ok"] is True and reply["result"] == 5
    assert probe.call("query", "plus", a="40")["result"] == 41
    view = probe.call("view", "hello", user="bob")
    assert view["ok"] is True and view["result"] == "<p>Hello bob</p>"


def test_numpy_results_cross_the_wire(probe):
    reply = probe.call("query", "arange", n="4")
    assert reply["result"] == [0, 1, 2, 3]


def test_params_and_conversions_in_the_sandbox(probe):
    reply = probe.call("query", "extras", flag="yes", other=["1", "2"], db="evil")
    assert reply["result"] == {"flag": True, "params": {"other": ["1", "2"]}}


def test_bad_parameter_reply_names_it(probe):
    reply = probe.call("query", "add", b="1")
    assert reply["ok"] is False
    assert reply["error"]["code"] == "bad_parameter"
    assert reply["error"]["param"] == "a"
    reply = probe.call("query", "add", a="two")
    assert reply["error"]["code"] == "bad_parameter" and reply["error"]["param"] == "a"


def test_unknown_endpoint_reply(probe):
    reply = probe.call("query", "hello")  # a view, not a query
    assert reply["ok"] is False and reply["error"]["code"] == "not_found"
    assert probe.call("view", "nope")["error"]["code"] == "not_found"


def test_ping(probe):
    request = probe.send(protocol.request("ping", 5.0))
    reply = probe.reply()
    assert reply["type"] == "ping_reply" and reply["id"] == request["id"]
    assert reply["result"] == {"pid": probe.process.pid}


def test_deadline_already_passed_is_a_timeout_reply(probe):
    request = protocol.request("call", 5.0, kind="query", name="add", params={"a": 1})
    request["deadline"] = time.time() - 60
    probe.send(request)
    reply = probe.reply()
    assert reply["id"] == request["id"]
    assert reply["ok"] is False and reply["error"]["code"] == "timeout"


def test_unsendable_result_is_an_error_reply(probe):
    reply = probe.call("query", "not_sendable")
    assert reply["ok"] is False and reply["error"]["code"] == "module_error"
    assert probe.call("query", "add", a=1)["result"] == 2


# -- input the loop must survive ---------------------------------------------

def test_wrong_key_gets_no_reply(probe):
    forged = protocol.Signer(protocol.new_key())
    probe.dealer.send_multipart(forged.pack(
        protocol.request("call", 5.0, kind="query", name="add", params={"a": 1})))
    probe.assert_silent()
    assert probe.call("query", "add", a=1)["result"] == 2


@pytest.mark.parametrize("frames", [
    [b"garbage"],
    [b""],
    [b"\x00" * 32, b"\xc1\xc1not msgpack"],
    [b"one", b"two", b"three", b"four"],
    [os.urandom(32), msgpack.packb({"v": 1, "type": "call_request", "id": 1, "kind": "query",
                                    "name": "add", "params": {"a": 1}})],
])
def test_garbage_frames_get_no_reply(probe, frames):
    probe.dealer.send_multipart(frames)
    probe.assert_silent()
    assert probe.call("query", "add", a="5")["result"] == 6


def test_signed_messages_of_other_types_or_versions_are_dropped(probe):
    unknown = protocol.request("frobnicate", 5.0)
    probe.send(unknown)
    probe.assert_silent()
    old = protocol.request("call", 5.0, kind="query", name="add", params={"a": 1})
    old["v"] = protocol.VERSION + 1
    probe.send(old)
    probe.assert_silent()
    assert probe.call("query", "add", a="1")["result"] == 2


@pytest.mark.parametrize("message", [
    {"v": protocol.VERSION, "type": "call_request", "kind": "query", "name": "add", "params": {"a": 1}},
    {"v": protocol.VERSION, "type": "ping_request"},
    {"v": protocol.VERSION, "type": ["call_request"], "id": 1},
    {"v": protocol.VERSION, "type": "call_request", "id": 2, "deadline": "soon", "kind": "query",
     "name": "add", "params": {"a": 1}},
], ids=["no-id", "ping-no-id", "list-type", "text-deadline"])
def test_signed_malformed_messages_do_not_kill_the_loop(probe, message):
    probe.send(message)
    if probe.dealer.poll(SILENCE_MS):
        probe.dealer.recv_multipart()  # an error reply is fine too
    assert probe.call("query", "add", a="1")["result"] == 2
    assert probe.process.poll() is None


# -- module errors ---------------------------------------------------------------

def test_module_exception_is_an_error_reply_and_a_report(probe):
    reply = probe.call("query", "explode")
    assert reply["ok"] is False
    assert reply["error"]["code"] == "module_error"
    # the traceback travels to hostd for its records (dead letters), apart from the message...
    assert "secret-detail-1234" in reply["error"]["traceback"]
    assert "secret-detail-1234" not in reply["error"]["message"]
    assert "Traceback" not in reply["error"]["message"]
    assert "ValueError" in reply["error"]["message"]
    # ...and what hostd answers a caller with leaves it out
    answered = json.dumps(error_from_reply(reply["error"]).to_reply_fields())
    assert "secret-detail-1234" not in answered and "Traceback" not in answered

    identity, report = probe.receive_upcall("error_report")
    assert identity == [b"probe"]
    assert report["module"] == "probe"
    assert "explode" in report["endpoint"]
    assert "Traceback" in report["traceback"]
    assert "secret-detail-1234" in report["traceback"]
    # the loop goes on
    assert probe.call("query", "add", a="1")["result"] == 2


# -- upcalls ---------------------------------------------------------------------

def test_cross_module_call_goes_through_the_upcall_socket(probe):
    request = protocol.request("call", 10.0, kind="query", name="relay", params={"x": "7"})
    probe.send(request)
    identity, upcall = probe.receive_upcall("call_request")
    assert identity == [b"probe"]
    assert upcall["kind"] == "query" and upcall["name"] == "remote_thing"
    assert upcall["params"] == {"x": 7}
    assert "deadline" in upcall
    probe.router.send_multipart(identity + probe.signer.pack(protocol.reply_ok(upcall, {"got": 7})))
    reply = probe.reply()
    assert reply["id"] == request["id"]
    assert reply["ok"] is True and reply["result"] == {"got": 7}


def test_cross_module_call_error_becomes_a_module_error(probe):
    probe.send(protocol.request("call", 10.0, kind="query", name="relay", params={"x": "1"}))
    identity, upcall = probe.receive_upcall("call_request")
    probe.router.send_multipart(identity + probe.signer.pack(
        protocol.reply_error(upcall, "not_found", "no query named 'remote_thing'")))
    reply = probe.reply()
    assert reply["ok"] is False and reply["error"]["code"] == "module_error"
    assert probe.call("query", "add", a="1")["result"] == 2


def test_requests_are_served_while_waiting_for_an_upcall(probe):
    first = probe.send(protocol.request("call", 10.0, kind="query", name="relay", params={"x": "1"}))
    identity, upcall = probe.receive_upcall("call_request")
    # the sandbox is blocked in the upcall, yet answers another request meanwhile
    assert probe.call("query", "add", a="1")["result"] == 2
    probe.router.send_multipart(identity + probe.signer.pack(protocol.reply_ok(upcall, "late")))
    reply = probe.reply()
    assert reply["id"] == first["id"] and reply["result"] == "late"


# -- load failure and shutdown ---------------------------------------------------

def test_import_failure_reports_load_failed_and_exits_3(start):
    sandbox = start("""
        from sandbox import query

        raise RuntimeError("import-failure-marker")
    """, name="broken")
    identity, message = sandbox.receive_upcall("load_failed")
    assert identity == [b"broken"]
    assert message["module"] == "broken"
    assert "Traceback" in message["traceback"]
    assert "import-failure-marker" in message["traceback"]
    assert sandbox.process.wait(timeout=WAIT_S) == protocol.EXIT_LOAD_FAILED == 3


def test_load_error_reports_load_failed_and_exits_3(start):
    sandbox = start("""
        from sandbox import view

        @view()
        def page(events):
            return ""
    """, name="badsig")
    _, message = sandbox.receive_upcall("load_failed")
    assert "ModuleLoadError" in message["traceback"]
    assert "badsig.page" in message["traceback"]
    assert sandbox.process.wait(timeout=WAIT_S) == protocol.EXIT_LOAD_FAILED


def test_sigterm_exits_cleanly(probe):
    assert probe.call("query", "add", a="1")["ok"] is True
    probe.process.send_signal(signal.SIGTERM)
    assert probe.process.wait(timeout=WAIT_S) == 0
