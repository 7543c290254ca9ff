"""Data layers (``properties.py``) run only in sandboxes, against a real ``hostd serve`` (issue 11).

The daemon runs ``tests/layer_modules``:

* ``layer_spy``: its ``properties.py`` defines ``spy.kind`` and, when imported,
  appends the importing process's pid, euid and parent pid to ``$HOME/imports.jsonl``
  (``$HOME`` is the importing sandbox's own data folder);
* ``spy_consumer``: a realtime handler filtered on ``{"spy.kind": "wanted"}``;
* ``loop_layer`` / ``exit_layer``: their ``properties.py`` loops / calls ``os._exit(7)``
  at import;
* ``loop_consumer``: a handler filtered on ``loop_layer.x``, the looping layer's namespace;
* ``good_one``: a plain module (counts events, answers a query).

hostd learns what a layer declares from a confined probe and never imports it;
the consuming sandbox decides property clauses and acknowledges the events they
reject without calling the handler. A broken layer fails only the modules that
use it, each saying why in ``/modules``.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import psutil
import pytest

from running_hostd import start_daemon, stop_daemon, wait_until
from unprivileged import account as unprivileged_account

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

LAYER_MODULES = Path(__file__).resolve().parent / "layer_modules"
RUNNING = {"layer_spy", "spy_consumer", "good_one"}
FAILED = {"loop_layer", "exit_layer", "loop_consumer"}
START_TIMEOUT_S = 4
HTTP_TIMEOUT_S = 30


@pytest.fixture(scope="module", params=["auto", "user", "unprivileged"])
def hostd(request, tmp_path_factory):
    """A daemon confining sandboxes as it can (root mode when root), then in user-namespace
    mode, then run as an unprivileged user (tests/unprivileged.py)."""
    account = unprivileged_account() if request.param == "unprivileged" else None
    isolation = "user" if request.param == "user" else "auto"
    daemon = start_daemon(tmp_path_factory.mktemp("layers"), LAYER_MODULES, RUNNING, FAILED,
                          limits=f"start_timeout_s = {START_TIMEOUT_S}", account=account,
                          more=f'[sandbox]\nisolation = "{isolation}"\n')
    daemon.account = account
    try:
        yield daemon
    finally:
        stop_daemon(daemon)


def post(hostd, events):
    response = hostd.post("/event", json=events, timeout=HTTP_TIMEOUT_S)
    assert response.status_code in (200, 202), response.text
    return response


def imports(hostd) -> list[dict]:
    """Every recorded import of ``layer_spy/properties.py``, from every module's data folder."""
    found = []
    for path in (hostd.data_dir / "modules").glob("*/imports.jsonl"):
        found += [dict(json.loads(line), home=path.parent.name) for line in path.read_text().splitlines()]
    return found


def host_processes(hostd) -> dict:
    """``{pid: role}`` of hostd, its web workers and its pre-warmed parent (never a sandbox)."""
    main = psutil.Process(hostd.process.pid)
    roles = {main.pid: "hostd"}
    for child in main.children(recursive=True):
        command = " ".join(child.cmdline())
        if "gunicorn" in command or "hostd.wsgi" in command:
            roles[child.pid] = "web worker"
        elif "sandbox.forkserver" in command and child.ppid() == main.pid:  # its children are sandboxes
            roles[child.pid] = "fork server"
    return roles


def test_a_data_layer_is_imported_only_by_sandboxes_never_by_hostd(hostd):
    tag = uuid.uuid4().hex
    post(hostd, [{"kind": "wanted", "tag": tag}])
    wait_until(lambda: tag in hostd.get("/query/seen").json(), 30, what="the consumer's event")
    records = imports(hostd)
    roles = host_processes(hostd)
    assert len(roles) >= 2, roles  # hostd and its web workers were found
    assert records, "nothing recorded an import"
    assert not [r for r in records if r["pid"] in roles], (records, roles)
    assert not [r for r in records if r["ppid"] == 1], records
    consumer_pid = hostd.modules()["spy_consumer"]["pid"]
    assert any(r["pid"] == consumer_pid for r in records), (consumer_pid, records)  # read where it is used
    assert {r["home"] for r in records} <= {"layer_spy", "spy_consumer"}, records  # by no one else
    if hostd.account is not None:
        assert {r["euid"] for r in records} == {hostd.account.uid}, records
    elif os.geteuid() == 0 and hostd.modules()["spy_consumer"]["confinement"].get("uid"):
        assert all(r["euid"] != 0 for r in records), records  # root mode: the module's own uid


def test_a_realtime_request_waits_only_for_the_handlers_whose_property_clauses_match(hostd):
    other, wanted = uuid.uuid4().hex, uuid.uuid4().hex
    rejected = post(hostd, [{"kind": "other", "tag": other}])
    assert rejected.status_code == 202, rejected.text  # 202: no realtime handler ran
    accepted = post(hostd, [{"kind": "wanted", "tag": wanted}, {"kind": "other", "tag": uuid.uuid4().hex}])
    assert accepted.status_code == 200, accepted.text  # 200: after the realtime handler ran
    seen = hostd.get("/query/seen").json()  # the 200 came after the handler ran
    assert wanted in seen and other not in seen, seen
    handler = hostd.modules()["spy_consumer"]["handlers"]["record"]
    assert handler["handled"] == len(seen), (handler, seen)  # rejected events are not counted as handled


def test_layers_that_loop_or_exit_at_import_fail_only_the_modules_using_them(hostd):
    modules = hostd.modules()
    assert "did not finish importing" in modules["loop_layer"]["last_error"], modules["loop_layer"]
    assert "ended the process" in modules["exit_layer"]["last_error"], modules["exit_layer"]
    assert "exit status 7" in modules["exit_layer"]["last_error"]
    assert "loop_layer" in modules["loop_consumer"]["last_error"], modules["loop_consumer"]
    before = hostd.get("/query/good_count").json()
    post(hostd, [{"kind": "any", "tag": uuid.uuid4().hex}])
    wait_until(lambda: hostd.get("/query/good_count").json() > before, 30, what="good_one's handler")
    assert hostd.get("/query/spy_alive").json() == "spy"


def test_event_properties_are_reported_by_the_probes(hostd):
    described = hostd.get("/event_properties").json()
    assert [(p["namespace"], p["name"], p["modules"]) for p in described] == [("spy", "kind", ["module layer_spy"])]
    assert described[0]["doc"] == "The event's ``kind`` field."
