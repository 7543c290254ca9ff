"""hostd's sweeper of expired module files (:mod:`hostd.fs_sweeper`), on both backends.

Files are checked where the backend keeps them (the folder on disk, the GridFS
collections), never through a store, which would drop expired files itself.
"""
from __future__ import annotations

import itertools
import json
import time

import gridfs
import pytest
from running_hostd import wait_until

from hostd.fs_sweeper import STALE_STAGING_S, ExpirySweeper
from hostd.periodic import PeriodicTask
from hostd.module_files import ModuleFiles
from hostd.store import EmbeddedStore, connect
from sandbox.gridfs_store import BUCKET

pytestmark = pytest.mark.timeout(120)

_names = itertools.count()


@pytest.fixture(scope="module")
def mongo(tmp_path_factory):
    with EmbeddedStore(tmp_path_factory.mktemp("store")) as store:
        client = connect(store.url)
        yield client
        client.close()


class Backend:
    """Module stores on one backend, and a look at what it really holds."""

    def __init__(self, name, modules_dir, client):
        self.name, self.modules_dir, self.client = name, modules_dir, client
        self.files = ModuleFiles(name, modules_dir, client)

    def module(self) -> str:
        return f"sw{next(_names)}"

    def write(self, module, name, data=b"data", expires_in=None):
        store = self.files.store(module)
        with store.open(name, "wb") as handle:
            handle.write(data)
        if expires_in is not None:
            store.expire(name, expires_in)

    def held(self, module) -> set[str]:
        """:returns: the names of the files really there."""
        if self.name == "local":
            root = self.modules_dir / module / "fs"
            return {p.relative_to(root).as_posix() for p in root.rglob("*")
                    if p.is_file() and not p.relative_to(root).as_posix().startswith(".insights-")}
        database = self.client[f"mod_{module}"]
        bucket = gridfs.GridFSBucket(database, bucket_name=BUCKET)
        held = set()
        for doc in database[f"{BUCKET}.files"].find({}):
            try:  # every file listed is whole: its chunks are there
                assert bucket.open_download_stream(doc["_id"]).read()
            except (gridfs.errors.NoFile, gridfs.errors.CorruptGridFile):
                if database[f"{BUCKET}.files"].find_one({"_id": doc["_id"]}) is None:
                    continue  # a running sweeper deleted it since it was listed
                raise
            held.add(doc["filename"])
        return held

    def chunks_of(self, module, name) -> list:
        database = self.client[f"mod_{module}"]
        ids = [doc["_id"] for doc in database[f"{BUCKET}.files"].find({"filename": name})]
        return [chunk for file_id in ids for chunk in database[f"{BUCKET}.chunks"].find({"files_id": file_id})]


@pytest.fixture(params=["local", "gridfs"])
def backend(request, tmp_path):
    client = request.getfixturevalue("mongo") if request.param == "gridfs" else None
    return Backend(request.param, tmp_path / "modules", client)


def test_sweep_once_deletes_the_expired_files_of_every_module(backend):
    first, second = backend.module(), backend.module()
    backend.write(first, "old.png", expires_in=10)
    backend.write(first, "later.png", expires_in=1000)
    backend.write(first, "kept.png")
    backend.write(second, "plots/old.png", b"x" * 700_000, expires_in=20)
    backend.write(second, "plots/kept.png")
    sweeper = ExpirySweeper(backend.name, backend.modules_dir, backend.client)

    counts = sweeper.sweep_once(now=time.time() + 100)

    assert counts[first] == 1 and counts[second] == 1
    assert backend.held(first) == {"later.png", "kept.png"}
    assert backend.held(second) == {"plots/kept.png"}
    if backend.name == "gridfs":
        assert backend.chunks_of(second, "plots/old.png") == []
    again = sweeper.sweep_once(now=time.time() + 100)
    assert again[first] == 0 and again[second] == 0
    assert sweeper.sweep_once(now=time.time() + 2000)[first] == 1
    assert backend.held(first) == {"kept.png"}


def test_nothing_is_due_before_its_time(backend):
    module = backend.module()
    backend.write(module, "a.png", expires_in=100)
    assert ExpirySweeper(backend.name, backend.modules_dir, backend.client).sweep_once()[module] == 0
    assert backend.held(module) == {"a.png"}


def test_the_sweeper_thread_deletes_expired_files_until_stopped(backend):
    module = backend.module()
    backend.write(module, "a.png", expires_in=0.5)
    backend.write(module, "b.png")
    sweeper = PeriodicTask("insights-fs-sweeper", ExpirySweeper(backend.name, backend.modules_dir, backend.client)
                           .sweep_once, 0.05, "sweeping expired files")
    sweeper.start()
    try:
        wait_until(lambda: backend.held(module) == {"b.png"}, 30, what="the expired file deleted")
        assert sweeper.runs >= 1
    finally:
        sweeper.stop()
    assert not sweeper.is_alive()


def test_a_module_that_cannot_be_swept_does_not_stop_the_others(backend, tmp_path):
    good = backend.module()
    backend.write(good, "old.png", expires_in=10)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    if backend.name == "local":
        bad = "evil"
        root = backend.modules_dir / bad / "fs"
        root.mkdir(parents=True)
        (root / "link").symlink_to(outside)
        (root / ".insights-expiry.json").write_text(json.dumps({"link/secret.txt": 0}))
    else:
        bad = "bad-name"  # a database no module could have
        backend.client[f"mod_{bad}"]["x"].insert_one({"x": 1})
    counts = ExpirySweeper(backend.name, backend.modules_dir, backend.client).sweep_once(now=time.time() + 100)
    assert counts[good] == 1 and bad not in counts
    assert backend.held(good) == set()
    assert (outside / "secret.txt").read_text() == "secret"


def test_staging_files_of_dead_writers_are_swept(tmp_path):
    backend = Backend("local", tmp_path / "modules", None)
    module = backend.module()
    handle = backend.files.store(module).open("a.png", "wb")  # its writer died before closing it
    handle.write(b"partial")
    staging = tmp_path / "modules" / module / "fs" / ".insights-staging"
    sweeper = ExpirySweeper("local", backend.modules_dir)
    sweeper.sweep_once()
    assert len(list(staging.iterdir())) == 1
    sweeper.sweep_once(now=time.time() + STALE_STAGING_S + 60)
    assert list(staging.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        handle.close()
