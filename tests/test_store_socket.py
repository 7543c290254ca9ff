"""The embedded store is reachable only by hostd's user: a unix socket, no TCP port.

nx-27017 has no authentication, so these tests check that nothing of it listens
on TCP (its process owns no inet socket at all, by psutil and by its socket
inodes in ``/proc/net``), that ``store.url`` names its unix socket, that the
socket (0600), its folder (0700) and ``store.url`` (0600) keep other users
out, and that another user really is kept out (as root: a process of the
unprivileged test user). A real ``hostd serve`` writes that URL, and a second
``hostd serve --mongo-url "$(cat store.url)"`` shares the first one's store.
"""
from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pymongo
import pytest
from pymongo.uri_parser import parse_uri

from hostd.store import EmbeddedStore, connect, store_url_path, unix_store_url
from hostd.storeproxy import StoreProxy
from running_hostd import start_daemon, stop_daemon, wait_until

E2E_MODULES = Path(__file__).resolve().parent / "modules"


def _socket_inodes(pid: int) -> set[int]:
    """:returns: the inodes of every socket process ``pid`` has open."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _inet_inodes() -> dict[int, str]:
    """:returns: ``{inode: "<table> <local address>"}`` of every TCP and UDP socket (IPv4 and IPv6)."""
    found = {}
    for table in ("tcp", "tcp6", "udp", "udp6"):
        with open(f"/proc/net/{table}") as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                found[int(fields[9])] = f"{table} {fields[1]}"
    return found


def assert_no_tcp(pid: int, socket_path: Path) -> None:
    """Process ``pid`` has no TCP or UDP socket, and does have ``socket_path`` open (so the
    check looked at the right process)."""
    process = psutil.Process(pid)
    assert process.net_connections(kind="inet") == []
    unix = [c.laddr for c in process.net_connections(kind="unix")]
    assert str(socket_path) in unix, unix
    inet = _inet_inodes()
    assert {inet[i] for i in _socket_inodes(pid) if i in inet} == set()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with EmbeddedStore(tmp_path_factory.mktemp("sock")) as embedded:
        yield embedded


def test_the_store_listens_on_no_tcp_port(store):
    assert_no_tcp(store.pid, store.socket_path)
    # nor does any other process serve it over TCP (the machine-wide view, as root)
    if os.geteuid() == 0:
        owners = {c.pid for c in psutil.net_connections(kind="inet")}
        assert store.pid not in owners


def test_store_url_is_the_socket_and_modes_keep_others_out(store, tmp_path_factory):
    data_dir = store.socket_path.parent.parent
    url = store_url_path(data_dir).read_text()
    assert url == store.url == unix_store_url(store.socket_path)
    assert parse_uri(url)["nodelist"] == [(str(store.socket_path), None)]
    assert stat.S_IMODE(store_url_path(data_dir).stat().st_mode) == 0o600
    info = store.socket_path.stat()
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert stat.S_IMODE(store.socket_path.parent.stat().st_mode) == 0o700
    assert info.st_uid == os.geteuid()
    with connect(url) as client:
        client["mod_sock"]["c"].insert_one({"_id": "x"})
        assert client["mod_sock"]["c"].find_one() == {"_id": "x"}
        assert client.admin.command("serverStatus")["pid"] == store.pid


def test_a_tcp_connect_to_any_port_of_the_store_process_fails(store):
    """Every port the store's process has (none), and the ports an nx-27017 would use."""
    ports = {int(c.laddr.port) for c in psutil.Process(store.pid).net_connections(kind="inet")}
    for port in sorted(ports | {27017}):
        try:
            client = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=500,
                                         connectTimeoutMS=500, directConnection=True)
            with client:
                pid = client.admin.command("serverStatus").get("pid")
        except pymongo.errors.PyMongoError:
            continue                                       # refused: nothing, or not a store
        assert pid != store.pid, f"the store answers on TCP port {port}"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a probe as another user")
def test_another_user_cannot_open_the_socket(store):
    from unprivileged import account
    user = account()
    probe = subprocess.run(
        [user.python, "-c", "import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
         "try:\n    s.connect(sys.argv[1])\nexcept OSError as err:\n    print(type(err).__name__)\n"
         "else:\n    print('connected')", str(store.socket_path)],
        capture_output=True, text=True, timeout=60, user=user.uid, group=user.gid, extra_groups=[],
        cwd="/", env={"PATH": "/usr/bin:/bin"})
    assert probe.stdout.strip() == "PermissionError", probe.stdout + probe.stderr


def test_a_data_dir_too_long_for_a_socket_gets_a_private_short_folder(tmp_path):
    data_dir = tmp_path / ("d" * 100)
    store = EmbeddedStore(data_dir)
    url = store.start()
    try:
        sock = store.socket_path
        assert not str(sock).startswith(str(data_dir)) and len(str(sock)) < 108
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700 and sock.parent.stat().st_uid == os.geteuid()
        assert url == unix_store_url(sock) == store_url_path(data_dir).read_text()
        assert_no_tcp(store.pid, sock)
        store.stop()
        assert not sock.parent.exists()                     # removed with the store
        assert store.start() == url                         # the same URL after a restart
        with connect(url) as client:
            assert client.admin.command("ping")["ok"] == 1
    finally:
        store.stop()


def test_a_stale_socket_file_is_replaced(tmp_path):
    (tmp_path / "store").mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "store" / "nx.sock"))         # left by a SIGKILLed store: nobody listens
    stale.close()
    with EmbeddedStore(tmp_path) as store, connect(store.url) as client:
        assert client.admin.command("serverStatus")["pid"] == store.pid


def test_the_module_relay_reaches_the_store_over_its_socket(store, tmp_path):
    proxy = StoreProxy(store.url)
    try:
        url = proxy.open("relayed", "mod_relayed", tmp_path / "relay.sock")
        with connect(url, serverSelectionTimeoutMS=3000) as client:
            client["mod_relayed"]["c"].insert_one({"_id": "through the relay"})
            assert client["mod_relayed"]["c"].find_one() == {"_id": "through the relay"}
            with pytest.raises(pymongo.errors.PyMongoError):
                client["mod_sock"]["c"].find_one()           # not its database: refused
        with connect(store.url) as direct:
            assert direct["mod_relayed"]["c"].find_one() == {"_id": "through the relay"}
    finally:
        proxy.stop()


# -- hostd ---------------------------------------------------------------------------

def _store_pid(daemon) -> int:
    for child in psutil.Process(daemon.process.pid).children(recursive=True):
        if any("nx_27017" in part for part in child.cmdline()):
            return child.pid
    raise AssertionError("hostd has no nx-27017 child")


@pytest.mark.e2e
def test_hostd_store_over_a_socket_and_a_second_node_sharing_it(tmp_path):
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
    first = start_daemon(tmp_path / "first", E2E_MODULES, {"e2e_probe"}, {"e2e_bad_import"})
    try:
        url = store_url_path(first.data_dir).read_text()
        sock = Path(parse_uri(url)["nodelist"][0][0])
        assert stat.S_IMODE(store_url_path(first.data_dir).stat().st_mode) == 0o600
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600 and stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        assert_no_tcp(_store_pid(first), sock)
        # the probe module's db works through the socket (directly, or through its relay)
        assert first.post("/query/uses_db").json() == {"value": 41, "token_matches": True}
        second = start_daemon(tmp_path / "second", E2E_MODULES, {"e2e_probe"}, {"e2e_bad_import"}, mongo_url=url)
        try:
            assert not (second.data_dir / "store.url").exists()  # it started no store of its own
            assert not [c for c in psutil.Process(second.process.pid).children(recursive=True)
                        if any("nx_27017" in part for part in c.cmdline())]
            assert second.post("/query/uses_db").json() == {"value": 41, "token_matches": True}
            event = {"kind": "socket-test", "id": uuid.uuid4().hex}
            assert second.is_new(event)
            assert not first.is_new(event)                   # one shared event log
            other = {"kind": "socket-test", "id": uuid.uuid4().hex}
            assert first.is_new(other)
            assert not second.is_new(other)
        finally:
            stop_daemon(second)
    finally:
        stop_daemon(first)


def test_another_process_of_the_same_user_connects_with_store_url(tmp_path):
    """As bench/ scripts and web workers do: read store.url, connect."""
    with EmbeddedStore(tmp_path) as store:
        script = ("import sys; from pathlib import Path; from hostd.store import connect, store_url_path\n"
                  "with connect(store_url_path(sys.argv[1]).read_text()) as c:\n"
                  "    print(c.admin.command('serverStatus')['pid'])")
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                              timeout=60)
        assert done.stdout.strip() == str(store.pid), done.stderr
    wait_until(lambda: not store_url_path(tmp_path).exists(), 5, what="store.url removed")
