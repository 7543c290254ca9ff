"""``GET /fs/{module}/{path}`` with the GridFS backend: in-process, then against a real ``hostd serve``.

Files are written into GridFS the way a module's sandbox writes them (a
:class:`~sandbox.gridfs_store.GridFileStore` on the module's database, URLs signed
with the module's key), then fetched through hostd.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import falcon.testing
import pytest
from running_hostd import Daemon, launch, stop_daemon, wait_announced

from hostd.app import create_app
from hostd.keys import module_fs_key
from hostd.module_files import WebFiles
from hostd.store import EmbeddedStore, connect
from sandbox.filestore import sign_path
from sandbox.gridfs_store import GridFileStore

pytestmark = pytest.mark.timeout(180)

MASTER = b"m" * 32
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    with EmbeddedStore(data_dir) as embedded:
        client = connect(embedded.url)
        yield data_dir, embedded.url, client
        client.close()


class GridWeb:
    """What :class:`~hostd.resources.FileResource` uses of a web context, set to the GridFS backend.

    :param client: what its ``store_client()`` answers (None: it has no such method).
    :param store_url: its ``store_url`` (None: it has none).
    """

    def __init__(self, data_dir, client=None, store_url=None):
        self.config = {"storage.fs": "gridfs", "storage.mongo_url": "", "storage.data_dir": str(data_dir),
                       "limits.max_body_mb": 1.0, "server.bind": "127.0.0.1",
                       "auth.required": "auto", "auth.tokens": []}
        if client is not None:
            self.store_client = lambda: client
        if store_url is not None:
            self.store_url = store_url
        self._data_dir = Path(data_dir)

    def fs_key(self, module):
        return module_fs_key(MASTER, module)

    def module_fs_root(self, module):
        return str(self._data_dir / "modules" / module / "fs")


def module_store(client, web_or_key, module):
    key = web_or_key.fs_key(module) if hasattr(web_or_key, "fs_key") else web_or_key
    return GridFileStore(client[f"mod_{module}"], module, key)


def get(client, url):
    parts = urlsplit(url)
    return client.simulate_get(parts.path, query_string=parts.query)


def test_gridfs_file_behind_a_signed_url(store):
    data_dir, url, mongo = store
    web = GridWeb(data_dir, client=mongo)
    client = falcon.testing.TestClient(create_app(web))
    fs = module_store(mongo, web, "charts")
    with fs.open("plots/chart.png", "wb") as handle:
        handle.write(PNG)
    served = get(client, fs.get_url("plots/chart.png"))
    assert served.status_code == 200
    assert served.content == PNG
    assert served.headers["content-type"] == "image/png"
    assert int(served.headers["content-length"]) == len(PNG)


@pytest.mark.parametrize("with_store_url", [True, False], ids=["web-context-url", "store-url-file"])
def test_without_a_store_client_web_files_connect_by_themselves(store, with_store_url):
    data_dir, url, mongo = store
    web = GridWeb(data_dir, store_url=url if with_store_url else None)
    module_store(mongo, web, "own").open("a.txt", "w").close()
    files = WebFiles(web)
    try:
        assert files.store_url() == url
        with files.store("own").open("a.txt", "rb") as handle:
            assert handle.read() == b""
    finally:
        files.close()


def test_gridfs_refusals(store):
    data_dir, url, mongo = store
    web = GridWeb(data_dir, client=mongo)
    client = falcon.testing.TestClient(create_app(web))
    fs = module_store(mongo, web, "grades")
    with fs.open("r.txt", "w") as handle:
        handle.write("data")
    key = web.fs_key("grades")
    expires = int(time.time()) + 600
    good = sign_path(key, "grades", "r.txt", expires)
    for params in ({"expires": expires, "sig": "0" * 64}, {"expires": expires + 1, "sig": good}, {},
                   {"expires": int(time.time()) - 5, "sig": sign_path(key, "grades", "r.txt", int(time.time()) - 5)}):
        result = client.simulate_get("/fs/grades/r.txt", params=params)
        assert result.status_code == 403 and b"data" not in result.content
    assert client.simulate_get("/fs/grades/r.txt", params={"expires": expires, "sig": good}).text == "data"
    # a file on disk where the local backend would look is not served: the backend is GridFS
    local = Path(web.module_fs_root("grades"))
    local.mkdir(parents=True)
    (local / "disk.txt").write_text("on disk")
    assert get(client, fs.get_url("disk.txt")).status_code == 404
    # an expired file is gone before any sweeper ran
    url_of_r = fs.get_url("r.txt")
    fs.expire("r.txt", -1)
    assert get(client, url_of_r).status_code == 404


# -- a real hostd serve with [storage] fs = "gridfs" ----------------------------------

def start_gridfs_daemon(tmp) -> Daemon:
    """:returns: a running ``hostd serve`` configured with the GridFS backend (and no module)."""
    data_dir = Path(tempfile.mkdtemp(prefix="insights-fs-"))  # short: unix socket paths
    modules = tmp / "modules"
    modules.mkdir()
    config = tmp / "hostd.toml"
    config.write_text('[server]\nworkers = 1\n\n[storage]\nfs = "gridfs"\n', encoding="utf-8")
    daemon = Daemon(*launch(tmp, data_dir, config, modules), data_dir)
    try:
        wait_announced(daemon.process, daemon.log_path)
    except BaseException:
        stop_daemon(daemon)
        raise
    return daemon


@pytest.mark.e2e
def test_hostd_serve_with_the_gridfs_backend_serves_signed_urls(tmp_path):
    daemon = start_gridfs_daemon(tmp_path)
    try:
        mongo = connect((daemon.data_dir / "store.url").read_text().strip())
        try:
            master = bytes.fromhex((daemon.data_dir / "fs.key").read_text().strip())
            fs = module_store(mongo, module_fs_key(master, "charts"), "charts")
            with fs.open("chart.png", "wb") as handle:
                handle.write(PNG)
            url = fs.get_url("chart.png", expires=600)
            served = daemon.get(url)
            assert served.status_code == 200, served.text
            assert served.content == PNG
            assert served.headers["content-type"] == "image/png"

            path, query = url.split("?", 1)
            sig = query.rsplit("sig=", 1)[1]
            tampered = sig[:-1] + ("0" if sig[-1] != "0" else "1")
            assert daemon.get(f"{path}?{query.replace(sig, tampered)}").status_code == 403
            assert daemon.get(path).status_code == 403
            assert daemon.get(fs.get_url("chart.png", expires=-10)).status_code == 403
            # signed by another module's key
            other = module_store(mongo, module_fs_key(master, "other"), "charts")
            assert daemon.get(other.get_url("chart.png")).status_code == 403

            fs.expire("chart.png", -1)
            assert daemon.get(url).status_code == 404
        finally:
            mongo.close()
    finally:
        stop_daemon(daemon)
