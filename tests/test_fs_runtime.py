"""The ``fs`` a module gets from its sandbox spec: backend and quota (:class:`sandbox.runtime.ModuleRuntime`).

The module is loaded and called in-process through the runtime, exactly as its
sandbox process calls it, against a real embedded store.
"""
from __future__ import annotations

import os
import re
import textwrap
import time

import gridfs
import pytest
from test_readme_examples import example_module

from hostd.store import connect
from sandbox.errors import FileQuotaExceeded
from sandbox.filestore import FileStore
from sandbox.gridfs_store import BUCKET, GridFileStore
from sandbox.loader import load_module
from sandbox.runtime import ModuleRuntime

pytestmark = pytest.mark.timeout(120)

SOURCE = """
    from sandbox import FileQuotaExceeded, query

    @query()
    def save(fs, name: str, size: int):
        with fs.open(name, "wb") as handle:
            handle.write(b"x" * size)
        return fs.listdir()

    @query()
    def save_or_say(fs, name: str, size: int):
        try:
            return save(fs, name, size)
        except FileQuotaExceeded as err:
            return f"refused: {err}"

    @query()
    def visits(db):
        db["visits"].update_one({"_id": "n"}, {"$inc": {"n": 1}}, upsert=True)
        return db["visits"].find_one({"_id": "n"})["n"]
"""


@pytest.fixture
def module_dir(tmp_path):
    folder = tmp_path / "modules" / "fsprobe"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(textwrap.dedent(SOURCE), encoding="utf-8")
    return folder


@pytest.fixture
def runtime(module_dir, tmp_path, store_url):
    """:returns: ``make(**spec)``: a runtime of the module with these spec keys added."""
    made = []

    def make(**spec):
        spec = {"module": "fsprobe", "store_url": store_url, "db_name": "mod_fsprobe",
                "fs_root": str(tmp_path / "data" / "fs"), "fs_key": os.urandom(32).hex(), **spec}
        made.append(ModuleRuntime(load_module(module_dir, "fsprobe"), spec, upcaller=None))
        return made[-1]
    yield make
    for probe in made:
        probe.db.client.close()  # the sandbox process would simply exit


def call(runtime, endpoint, kind="query", **params):
    return runtime.prepare_message({"kind": kind, "name": endpoint, "params": params})()


def test_without_the_new_spec_keys_fs_is_the_local_folder_without_limit(runtime, tmp_path):
    probe = runtime()
    assert isinstance(probe.fs, FileStore)
    assert call(probe, "save", name="a.bin", size=3 * 1024 * 1024) == ["a.bin"]
    assert (tmp_path / "data" / "fs" / "a.bin").stat().st_size == 3 * 1024 * 1024


def test_gridfs_backend_and_quota_from_the_spec(runtime, tmp_path, store_url):
    probe = runtime(fs_backend="gridfs", fs_mb=0.01)  # 10485 bytes
    assert isinstance(probe.fs, GridFileStore)
    assert call(probe, "save", name="small.bin", size=5000) == ["small.bin"]
    with pytest.raises(FileQuotaExceeded, match=r"'big\.bin'.*limit of 0\.01 MiB"):
        call(probe, "save", name="big.bin", size=6000)
    # the rest of the module keeps working: its store, its other files, new writes
    assert call(probe, "visits") == 1
    assert call(probe, "save", name="other.bin", size=5000) == ["other.bin", "small.bin"]
    assert call(probe, "save_or_say", name="third.bin", size=1000).startswith("refused: writing 'third.bin'")
    client = connect(store_url)
    try:
        bucket = gridfs.GridFSBucket(client["mod_fsprobe"], bucket_name=BUCKET)
        assert bucket.open_download_stream_by_name("small.bin").read() == b"x" * 5000
        assert sorted(d["filename"] for d in client["mod_fsprobe"][f"{BUCKET}.files"].find({})) == [
            "other.bin", "small.bin"]
    finally:
        client.close()
    assert not (tmp_path / "data" / "fs").exists()  # nothing went to the local folder


def test_the_readme_example(tmp_path, store_url):
    folder = tmp_path / "modules" / "files"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(example_module("files"), encoding="utf-8")
    spec = {"module": "files", "store_url": store_url, "db_name": "mod_files", "fs_backend": "gridfs",
            "fs_mb": 0.001, "fs_root": str(tmp_path / "fs"), "fs_key": os.urandom(32).hex()}
    files = ModuleRuntime(load_module(folder, "files"), spec, upcaller=None)
    try:
        page = call(files, "report", kind="view")
        assert re.fullmatch(r'<a href="/fs/files/reports/today\.csv\?expires=\d+&sig=[0-9a-f]{64}">today</a>', page)
        assert files.fs.listdir("reports") == ["today.csv"]
        assert call(files, "save", name="a.txt", text="hello") == "saved"
        assert call(files, "save", name="b.txt", text="x" * 2000).startswith("not saved: writing 'b.txt'")
        assert files.fs.listdir() == ["a.txt", "reports"]
        assert files.fs.purge_expired(now=time.time() + 24 * 3600 + 1) == 1
        assert files.fs.listdir() == ["a.txt"]
    finally:
        files.db.client.close()
