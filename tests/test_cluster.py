"""Three ``hostd serve`` nodes on one store: placement, concurrent ingestion, partitions
spread over nodes, and a lease taken over after SIGKILL with no event lost or skipped.

Node 1 starts the embedded store; nodes 2 and 3 use its URL (read from its
``store.url``), each with its own data dir and port.
"""
import json
import shutil
import signal
import threading
from itertools import count
from pathlib import Path

import psutil
import pytest
import requests

from running_hostd import start_daemon, stop_daemon, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

LEASE_S = 3.0

TALLY = '''
from sandbox import event_handler, query


@event_handler()
def count(events, db):
    for e in events:
        db["count"].update_one({"_id": "e|" + e.meta["id"]}, {"$inc": {"n": 1}}, upsert=True)


@event_handler(per_user=True, partitions=4)
def by_user(events, db):
    for e in events:
        db["by_user"].update_one({"_id": "e|" + e.meta["id"]}, {"$inc": {"n": 1}}, upsert=True)


@event_handler(mode="realtime")
def live(events, db):
    for e in events:
        db["live"].update_one({"_id": "e|" + e.meta["id"]}, {"$inc": {"n": 1}}, upsert=True)


@query()
def seen(handler: str, db):
    """How many times each event reached a handler: {id: n}."""
    return {d["_id"][2:]: d["n"] for d in db[handler].find().limit(100000)}
'''

OTHER = '''
import os
import time
import uuid

from sandbox import cron, query


@query()
def other_ping():
    return "pong"


@cron(every=0.3)
def tick(db):
    db["runs"].insert_one({"_id": "r|" + uuid.uuid4().hex, "pid": os.getpid(), "at": time.time()})


@query()
def tick_runs(db):
    """The sandbox pid of each run, in order."""
    return [d["pid"] for d in db["runs"].find().sort("at", 1).limit(100000)]
'''


def _node_config(store_url: str = "", modules: str = "") -> str:
    storage = f'[storage]\nmongo_url = "{store_url}"\n\n' if store_url else ""
    return (f'{storage}[sandbox]\nisolation = "off"\n\n{modules}'
            f'[cluster]\nlease_s = {LEASE_S}\ngap_grace_s = 5.0\n')


class Cluster:
    """Three nodes; node 1 holds the embedded store."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.modules = tmp / "modules"
        for name, code in (("tally", TALLY), ("other", OTHER)):
            (self.modules / name).mkdir(parents=True)
            (self.modules / name / "__init__.py").write_text(code, encoding="utf-8")
        self.nodes = []
        self.killed = set()

    def start(self, name: str, running: set, store_url: str = "", modules: str = ""):
        folder = self.tmp / name
        folder.mkdir()
        node = start_daemon(folder, self.modules, running=running, failed=set(),
                            more=_node_config(store_url, modules))
        self.nodes.append(node)
        return node

    def store_url(self) -> str:
        return (Path(self.nodes[0].data_dir) / "store.url").read_text(encoding="utf-8").strip()

    def kill(self, node) -> None:
        """SIGKILL a node (not node 1: it holds the store) and whatever it left behind."""
        children = psutil.Process(node.process.pid).children(recursive=True)
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(30)
        _, alive = psutil.wait_procs(children, timeout=15)
        for child in alive:
            child.kill()
        shutil.rmtree(node.data_dir, ignore_errors=True)
        self.killed.add(id(node))

    def stop(self) -> None:
        for node in reversed(self.nodes):  # node 1, the store, last
            if id(node) not in self.killed:
                stop_daemon(node)

    def holders(self, node, module="tally") -> dict:
        """:returns: ``{handler: node holding its lease}`` as ``node`` sees it."""
        return {name: detail.get("lease") for name, detail in node.modules()[module]["handlers"].items()}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    group = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        group.start("node1", {"tally", "other"})
        url = group.store_url()
        assert url.startswith("mongodb://")
        group.start("node2", {"tally", "other"}, url)
        group.start("node3", {"tally"}, url, '[modules]\ndisable = ["other"]\n\n')
        yield group
    finally:
        group.stop()


_ids = count()


def _post_events(node, requests: int, per_request: int, accepted: list, late_realtime: bool) -> None:
    """POST events; each answer says the realtime handler ran them (200), or, with
    ``late_realtime``, maybe that it did not in time (504: its node was killed meanwhile)."""
    for _ in range(requests):
        events = [{"id": f"ev-{next(_ids)}", "username": f"user{n % 13}", "event_type": "x"}
                  for n in range(per_request)]
        answer = node.post("/event", data=json.dumps(events), headers={"Content-Type": "application/json"})
        assert answer.status_code in ((200, 504) if late_realtime else (200,)), answer.text
        assert answer.json()["accepted"] == per_request
        accepted.extend(e["id"] for e in events)


def _ingest(nodes, threads: int, requests: int, per_request: int = 4, late_realtime: bool = False) -> list:
    accepted, failures = [], []

    def work(node, n):
        try:
            _post_events(node, requests, per_request, accepted, late_realtime)
        except BaseException as err:  # reported below, in the test's thread
            failures.append(err)
    workers = [threading.Thread(target=work, args=(node, n)) for node in nodes for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not failures, failures
    return accepted


def _post_until_dead(node, accepted: list, stop: threading.Event) -> None:
    """POST to ``node`` until it stops answering; record what it accepted."""
    while not stop.is_set():
        events = [{"id": f"ev-{next(_ids)}", "username": f"user{n % 13}"} for n in range(4)]
        try:
            answer = node.post("/event", data=json.dumps(events), headers={"Content-Type": "application/json"},
                               timeout=10)
        except requests.RequestException:
            return
        if answer.status_code in (200, 504):
            accepted.extend(e["id"] for e in events)


def _wait_handled(node, accepted, handler: str, timeout_s: float = 180.0) -> dict:
    wanted = set(accepted)
    return wait_until(lambda: (lambda seen: seen if wanted <= set(seen) else None)(node.query("seen", handler=handler)),
                      timeout_s, interval_s=0.5, what=f"{len(wanted)} events handled by {handler}")


def test_each_node_runs_the_modules_its_config_enables_and_says_which_node_it_is(cluster):
    node1, node2, node3 = cluster.nodes
    ids = {node.get("/healthz").json()["node"] for node in cluster.nodes}
    assert len(ids) == 3
    assert set(node3.modules()) == {"tally"} and set(node1.modules()) == {"tally", "other"}
    assert node3.modules()["tally"]["node"] == node3.get("/healthz").json()["node"]
    assert node2.query("other_ping") == "pong"
    assert node3.post("/query/other_ping", json={}).status_code == 404


def test_three_nodes_ingesting_at_once_every_event_handled_once(cluster):
    accepted = _ingest(cluster.nodes, threads=3, requests=25)
    assert len(set(accepted)) == len(accepted)
    for handler in ("count", "by_user", "live"):
        seen = _wait_handled(cluster.nodes[0], accepted, handler)
        assert set(seen) == set(accepted), handler
        twice = {i: n for i, n in seen.items() if n != 1}
        assert not twice, f"{handler}: {len(twice)} events handled more than once"
    # every node sees every handler caught up, also those it does not feed
    for node in cluster.nodes:
        wait_until(lambda: node.modules()["tally"]["lag"] == 0, 30, interval_s=0.5, what="no lag in /modules")


def test_partitions_spread_over_the_nodes_and_every_lease_has_one_holder(cluster):
    def spread():
        views = [cluster.holders(node) for node in cluster.nodes]
        parts = {name: views[0].get(name) for name in views[0] if name.startswith("by_user#")}
        agreed = all(view == views[0] for view in views) and None not in views[0].values()
        return parts if agreed and len(parts) == 4 and len(set(parts.values())) >= 2 else None
    parts = wait_until(spread, 60, interval_s=0.5, what="by_user's partitions held by several nodes")
    names = {node.get("/healthz").json()["node"] for node in cluster.nodes}
    assert set(parts.values()) <= names


def test_a_cron_task_is_scheduled_by_one_node_only(cluster):
    node1, node2, _ = cluster.nodes
    seen = len(node1.query("tick_runs"))
    runs = wait_until(lambda: (lambda r: r if len(r) >= seen + 6 else None)(node1.query("tick_runs")), 60,
                      interval_s=0.3, what="six more runs of other.tick")
    assert len(set(runs[seen:])) == 1, "runs came from the sandboxes of two nodes"
    holders = {node.modules()["other"]["crons"]["tick"]["lease"] for node in (node1, node2)}
    assert len(holders) == 1 and None not in holders


def test_a_killed_lease_holder_is_replaced_and_no_event_is_lost_or_skipped(cluster):
    node1 = cluster.nodes[0]
    node_of = {node.get("/healthz").json()["node"]: node for node in cluster.nodes}
    holders = wait_until(lambda: (lambda h: h if None not in h.values() else None)(cluster.holders(node1)),
                         60, what="every consumer held")
    victim_id = next(holder for holder in holders.values() if node_of[holder] is not node1)
    victim = node_of[victim_id]
    leased = sorted(name for name, holder in holders.items() if holder == victim_id)
    survivors = [node for node in cluster.nodes if node is not victim]

    before = _ingest(survivors, threads=2, requests=10)
    to_victim, stop = [], threading.Event()
    feeding = threading.Thread(target=_post_until_dead, args=(victim, to_victim, stop))
    feeding.start()   # the victim dies while appending: seqs it reserved may never be written
    wait_until(lambda: len(to_victim) >= 8, 60, what="events accepted by the node about to be killed")
    cluster.kill(victim)
    stop.set()
    feeding.join(60)
    during = _ingest(survivors, threads=2, requests=10, late_realtime=True)
    wait_until(lambda: all(cluster.holders(node1)[name] not in (None, victim_id) for name in leased),
               60, interval_s=0.5, what=f"{', '.join(leased)} taken over from the killed node")
    after = _ingest(survivors, threads=2, requests=10)
    accepted = before + to_victim + during + after
    for handler in ("count", "by_user", "live"):
        seen = _wait_handled(node1, accepted, handler)
        missing = set(accepted) - set(seen)
        assert not missing, f"{handler}: {len(missing)} events lost"
