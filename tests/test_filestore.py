"""A module's file store and its signed URLs (:mod:`sandbox.filestore`, :mod:`sandbox.gridfs_store`).

The behaviour tests run against both backends: the local folder and GridFS on a
real embedded store (one database per test).
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from hostd.store import EmbeddedStore, connect
from sandbox.errors import FileQuotaExceeded
from sandbox.filestore import FileStore, UnsafePath, open_file_store, sign_path, verify_path
from sandbox.gridfs_store import BUCKET, GridFileStore

pytestmark = pytest.mark.timeout(120)

KEY = b"k" * 32
MIB = 1024 * 1024
_databases = itertools.count()


@pytest.fixture(scope="module")
def mongo(tmp_path_factory):
    with EmbeddedStore(tmp_path_factory.mktemp("store")) as store:
        client = connect(store.url)
        yield client
        client.close()


@pytest.fixture(params=["local", "gridfs"])
def make_fs(request, tmp_path):
    """:returns: ``make(limit_mb=None)``: a store of module ``mymod`` on the backend of the test."""
    database = request.getfixturevalue("mongo")[f"mod_fs{next(_databases)}"] if request.param == "gridfs" else None

    def make(limit_mb=None):
        return open_file_store(request.param, "mymod", KEY, root=tmp_path / "fs", database=database,
                               limit_mb=limit_mb)
    return make


@pytest.fixture
def fs(make_fs):
    return make_fs()


@pytest.fixture
def local_fs(tmp_path):
    return FileStore(tmp_path / "fs", "mymod", KEY)


def write(fs, name, data, mode="w"):
    with fs.open(name, mode) as handle:
        handle.write(data)


def read(fs, name, mode="r"):
    with fs.open(name, mode) as handle:
        return handle.read()


# -- files and folders ---------------------------------------------------------------

def test_open_write_then_read(fs):
    with fs.open("report.txt", "w", encoding="utf-8") as handle:
        handle.write("hello, café")
    with fs.open("report.txt", encoding="utf-8") as handle:
        assert handle.read() == "hello, café"
    assert read(fs, "report.txt", "rb") == "hello, café".encode()


def test_binary_and_subfolders(fs):
    with fs.open("plots/a/chart.png", "wb") as handle:
        handle.write(b"\x89PNG")
    with fs.open("plots/a/chart.png", "rb") as handle:
        assert handle.read() == b"\x89PNG"
    assert fs.exists("plots/a") and fs.exists("plots/a/chart.png")
    assert fs.listdir("plots") == ["a"]


def test_a_file_bigger_than_a_chunk_reads_back_whole_and_seeks(fs):
    data = os.urandom(700_000)  # GridFS cuts at 255 KiB
    write(fs, "big.bin", data, "wb")
    with fs.open("big.bin", "rb") as handle:
        assert handle.read() == data
        handle.seek(600_000)
        assert handle.read(10) == data[600_000:600_010]
        assert handle.tell() == 600_010
    assert fs.usage() == len(data)


def test_exists_and_remove(fs):
    assert not fs.exists("x.txt")
    write(fs, "x.txt", "1")
    assert fs.exists("x.txt")
    fs.remove("x.txt")
    assert not fs.exists("x.txt")
    fs.remove("x.txt")  # missing is fine


def test_open_missing_file_for_reading(fs):
    with pytest.raises(FileNotFoundError):
        fs.open("nothing.txt")
    with pytest.raises(FileNotFoundError):
        fs.open("nothing.txt", "r+")


def test_listdir(fs):
    assert fs.listdir() == []
    for name in ("b.txt", "a.txt", "sub/c.txt"):
        write(fs, name, name)
    assert fs.listdir() == ["a.txt", "b.txt", "sub"]
    assert fs.listdir("sub") == ["c.txt"]
    assert fs.listdir("sub/") == ["c.txt"]


def test_listdir_hides_the_expiry_bookkeeping(fs):
    write(fs, "a.txt", "1")
    fs.expire("a.txt", 3600)
    with fs.open("b.txt", "w"):
        pass
    assert fs.listdir() == ["a.txt", "b.txt"]


def test_a_folder_exists_while_it_holds_files(fs):
    write(fs, "sub/deeper/c.txt", "c")
    fs.remove("sub/deeper/c.txt")
    assert not fs.exists("sub")
    assert fs.listdir() == []
    with pytest.raises(FileNotFoundError):
        fs.listdir("sub")


def test_folders_and_files_do_not_mix(fs):
    write(fs, "sub/c.txt", "c")
    with pytest.raises(IsADirectoryError):
        fs.open("sub")
    with pytest.raises(IsADirectoryError):
        fs.open("sub", "w")
    with pytest.raises(IsADirectoryError):
        fs.remove("sub")
    with pytest.raises(NotADirectoryError):
        fs.open("sub/c.txt/d.txt", "w")
    with pytest.raises(NotADirectoryError):
        fs.listdir("sub/c.txt")
    assert read(fs, "sub/c.txt") == "c"


def test_names_have_one_spelling(fs):
    write(fs, "./sub//a.txt", "a")
    assert read(fs, "sub/a.txt") == "a"
    assert fs.listdir() == ["sub"]
    assert urlsplit(fs.get_url("./sub//a.txt")).path == "/fs/mymod/sub/a.txt"


# -- modes ---------------------------------------------------------------------------

def test_overwrite_replaces_the_content_when_closed(fs):
    write(fs, "a.txt", "old content")
    with fs.open("a.txt", "w") as handle:
        handle.write("new")
        assert read(fs, "a.txt") == "old content"  # a reader never sees a part
    assert read(fs, "a.txt") == "new"
    assert fs.listdir() == ["a.txt"]
    assert fs.usage() == 3


def test_append(fs):
    write(fs, "log.txt", "one\n", "a")
    write(fs, "log.txt", "two\n", "a")
    with fs.open("log.txt", "ab") as handle:
        handle.write(b"three\n")
        assert handle.tell() == 14
    assert read(fs, "log.txt") == "one\ntwo\nthree\n"


def test_exclusive_creation(fs):
    write(fs, "once.txt", "1", "x")
    with pytest.raises(FileExistsError):
        fs.open("once.txt", "x")
    assert read(fs, "once.txt") == "1"


def test_update_modes(fs):
    write(fs, "a.txt", "hello world")
    with fs.open("a.txt", "r+") as handle:
        assert handle.read(5) == "hello"
        handle.seek(6)
        handle.write("there")
    assert read(fs, "a.txt") == "hello there"
    with fs.open("a.txt", "a+") as handle:
        handle.write("!")
        handle.seek(0)
        assert handle.read() == "hello there!"
    with fs.open("b.bin", "w+b") as handle:
        handle.write(b"abcdef")
        handle.seek(2)
        assert handle.read(2) == b"cd"
        handle.truncate(3)
    assert read(fs, "b.bin", "rb") == b"abc"


def test_text_options_are_those_of_open(fs):
    with fs.open("crlf.txt", "w", newline="\r\n", encoding="latin-1") as handle:
        handle.write("é\nx")
    assert read(fs, "crlf.txt", "rb") == b"\xe9\r\nx"
    with fs.open("crlf.txt", encoding="latin-1") as handle:
        assert handle.read() == "é\nx"
        assert handle.mode == "r"
    with fs.open("crlf.txt", "rb") as handle:
        assert handle.readline() == b"\xe9\r\n"


@pytest.mark.parametrize("mode", ["", "rw", "rr", "wbt", "q", "b", "r++", 3])
def test_invalid_modes(fs, mode):
    with pytest.raises(ValueError):
        fs.open("a.txt", mode)


def test_binary_modes_take_no_encoding(fs):
    with pytest.raises(ValueError):
        fs.open("a.txt", "wb", encoding="utf-8")
    assert not fs.exists("a.txt")


def test_a_handle_reads_only_when_its_mode_says_so(fs):
    with fs.open("a.bin", "wb") as handle:
        with pytest.raises(OSError):
            handle.read()


# -- unsafe names --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../escape.txt", "a/../../escape.txt", "..", "sub/../.."])
def test_dotdot_is_unsafe(fs, name):
    with pytest.raises(UnsafePath):
        fs.open(name, "w")
    with pytest.raises(UnsafePath):
        fs.exists(name)
    with pytest.raises(UnsafePath):
        fs.get_url(name)


def test_absolute_paths_are_unsafe(fs, tmp_path):
    target = tmp_path / "outside.txt"
    with pytest.raises(UnsafePath):
        fs.open(str(target), "w")
    assert not target.exists()
    with pytest.raises(UnsafePath):
        fs.open("/etc/passwd")
    with pytest.raises(UnsafePath):
        fs.remove("/etc/passwd")


@pytest.mark.parametrize("name", ["", "a\x00b", None, 3, ".", "./"])
def test_invalid_names_are_unsafe(fs, name):
    with pytest.raises(UnsafePath):
        fs.open(name, "w")


@pytest.mark.parametrize("name", [".insights-expiry.json", ".insights-lock", "sub/.insights-x"])
def test_bookkeeping_names_are_reserved(fs, name):
    with pytest.raises(UnsafePath):
        fs.open(name, "w")
    with pytest.raises(UnsafePath):
        fs.open(name)


# -- expiry --------------------------------------------------------------------------

def test_expire_in_the_past_makes_the_file_vanish(fs):
    write(fs, "old.csv", "x")
    write(fs, "keep.csv", "y")
    fs.expire("old.csv", -1)
    assert not fs.exists("old.csv")
    assert fs.exists("keep.csv")
    assert fs.listdir() == ["keep.csv"]
    assert fs.usage() == 1


def test_expired_file_cannot_be_opened(fs):
    write(fs, "old.csv", "x")
    fs.expire("old.csv", -1)
    with pytest.raises(FileNotFoundError):
        fs.open("old.csv")


def test_expire_in_the_future_keeps_the_file(fs):
    write(fs, "soon.csv", "x")
    fs.expire("soon.csv", 3600)
    assert fs.exists("soon.csv")
    assert read(fs, "soon.csv") == "x"


def test_expire_a_missing_file(fs):
    with pytest.raises(FileNotFoundError):
        fs.expire("none.csv", 10)


def test_a_rewritten_file_keeps_its_expiry_and_a_removed_one_forgets_it(fs):
    write(fs, "a.csv", "1")
    fs.expire("a.csv", 100)
    write(fs, "a.csv", "2")
    assert fs.purge_expired(now=time.time() + 200) == 1
    assert not fs.exists("a.csv")
    write(fs, "b.csv", "1")
    fs.expire("b.csv", 100)
    fs.remove("b.csv")
    write(fs, "b.csv", "2")
    assert fs.purge_expired(now=time.time() + 200) == 0
    assert read(fs, "b.csv") == "2"


def test_purge_expired_deletes_what_is_due_at_the_time_given(fs):
    for name, seconds in (("a", 10), ("sub/b", 20), ("c", 1000)):
        write(fs, name, name)
        fs.expire(name, seconds)
    write(fs, "d", "never")
    assert fs.purge_expired(now=time.time() + 30) == 2
    assert fs.listdir() == ["c", "d"]
    assert fs.purge_expired(now=time.time() + 30) == 0


# -- quota (limits.fs_mb) ----------------------------------------------------------------

def test_a_write_past_the_quota_raises_and_leaves_nothing(make_fs):
    fs = make_fs(limit_mb=1)
    write(fs, "keep.bin", b"k" * (MIB // 2), "wb")
    with pytest.raises(FileQuotaExceeded, match=r"'big\.bin'.*limits\.fs_mb.*was not created") as info:
        with fs.open("big.bin", "wb") as handle:
            handle.write(b"b" * (MIB // 4))
            handle.write(b"b" * (MIB // 4))  # exactly at the limit: fine
            handle.write(b"b")
    assert "mymod" in str(info.value)
    assert handle.closed
    with pytest.raises(ValueError):
        handle.write(b"more")
    assert not fs.exists("big.bin")
    assert fs.listdir() == ["keep.bin"]
    assert fs.usage() == MIB // 2
    write(fs, "small.txt", "the store still works")
    assert read(fs, "small.txt") == "the store still works"


def test_rewriting_a_file_counts_its_new_size_only(make_fs):
    fs = make_fs(limit_mb=1)
    write(fs, "a.bin", b"1" * (MIB - 10), "wb")
    write(fs, "a.bin", b"2" * MIB, "wb")
    assert fs.usage() == MIB
    with pytest.raises(FileQuotaExceeded, match="is left as it was"):
        write(fs, "a.bin", b"3" * (MIB + 1), "wb")
    assert read(fs, "a.bin", "rb") == b"2" * MIB


def test_appending_past_the_quota_keeps_the_file_as_it_was(make_fs):
    fs = make_fs(limit_mb=0.001)  # 1048 bytes
    write(fs, "log.txt", "x" * 1000)
    with pytest.raises(FileQuotaExceeded):
        write(fs, "log.txt", "y" * 100, "a")
    assert read(fs, "log.txt") == "x" * 1000
    with fs.open("log.txt", "r+") as handle:  # rewriting in place does not grow it
        handle.write("z" * 1000)
    assert read(fs, "log.txt") == "z" * 1000


def test_a_text_write_past_the_quota_raises_at_the_write(make_fs):
    fs = make_fs(limit_mb=0.001)
    with fs.open("notes.txt", "w", encoding="utf-8") as handle:
        handle.write("é" * 500)  # 1000 bytes
        with pytest.raises(FileQuotaExceeded):
            handle.write("é" * 50)
    assert not fs.exists("notes.txt")


def test_no_limit_when_zero(make_fs):
    fs = make_fs(limit_mb=0)
    write(fs, "a.bin", b"a" * (2 * MIB), "wb")
    assert fs.usage() == 2 * MIB


# -- signed URLs ---------------------------------------------------------------------

def test_get_url_format_and_verification(fs):
    before = int(time.time())
    url = fs.get_url("plots/chart.png", expires=600)
    parts = urlsplit(url)
    assert parts.path == "/fs/mymod/plots/chart.png"
    query = parse_qs(parts.query)
    assert set(query) == {"expires", "sig"}
    expires, sig = query["expires"][0], query["sig"][0]
    assert before + 600 <= int(expires) <= int(time.time()) + 600
    assert sig == sign_path(KEY, "mymod", "plots/chart.png", int(expires))
    assert verify_path(KEY, "mymod", "plots/chart.png", expires, sig)


def test_verify_rejects_tampering(local_fs):
    query = parse_qs(urlsplit(local_fs.get_url("a.txt")).query)
    expires, sig = query["expires"][0], query["sig"][0]
    assert verify_path(KEY, "mymod", "a.txt", expires, sig)
    assert not verify_path(KEY, "mymod", "b.txt", expires, sig)
    assert not verify_path(KEY, "other", "a.txt", expires, sig)
    assert not verify_path(KEY, "mymod", "a.txt", int(expires) + 1, sig)
    assert not verify_path(b"x" * 32, "mymod", "a.txt", expires, sig)
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    assert not verify_path(KEY, "mymod", "a.txt", expires, flipped)
    assert not verify_path(KEY, "mymod", "a.txt", expires, "")
    assert not verify_path(KEY, "mymod", "a.txt", expires, None)
    assert not verify_path(KEY, "mymod", "a.txt", "soon", sig)
    assert not verify_path(KEY, "mymod", "a.txt", None, sig)


def test_verify_rejects_expiry():
    expires = int(time.time()) + 100
    sig = sign_path(KEY, "mymod", "a.txt", expires)
    assert verify_path(KEY, "mymod", "a.txt", expires, sig, now=expires - 1)
    assert not verify_path(KEY, "mymod", "a.txt", expires, sig, now=expires + 1)
    past = int(time.time()) - 10
    assert not verify_path(KEY, "mymod", "a.txt", past, sign_path(KEY, "mymod", "a.txt", past))


def test_get_url_already_expired(local_fs):
    query = parse_qs(urlsplit(local_fs.get_url("a.txt", expires=-10)).query)
    assert not verify_path(KEY, "mymod", "a.txt", query["expires"][0], query["sig"][0])


def test_unknown_backend():
    with pytest.raises(ValueError, match="'s3'"):
        open_file_store("s3", "mymod", KEY)


# -- what each backend keeps where ---------------------------------------------------

def test_local_files_are_plain_files_in_the_folder(local_fs, tmp_path):
    write(local_fs, "report.txt", "hello")
    write(local_fs, "plots/a.png", b"png", "wb")
    assert (tmp_path / "fs" / "report.txt").read_text() == "hello"
    assert (tmp_path / "fs" / "plots" / "a.png").read_bytes() == b"png"
    assert local_fs.root == tmp_path / "fs"
    local_fs.expire("report.txt", -1)
    assert not local_fs.exists("report.txt")
    assert not (tmp_path / "fs" / "report.txt").exists()


def test_local_quota_leaves_no_staging_file(tmp_path):
    fs = FileStore(tmp_path / "fs", "mymod", KEY, limit_mb=0.001)
    with pytest.raises(FileQuotaExceeded):
        write(fs, "a.bin", b"a" * 2000, "wb")
    leftovers = [p for p in (tmp_path / "fs").rglob("*") if p.is_file() and p.name.startswith("write-")]
    assert leftovers == []
    assert not (tmp_path / "fs" / "a.bin").exists()


def test_local_stale_staging_files_are_removed(local_fs):
    handle = local_fs.open("a.txt", "w")  # a writer that died before closing
    handle.write("x")
    staged = local_fs.root / ".insights-staging"
    assert len(os.listdir(staged)) == 1
    assert local_fs.remove_stale_staging(3600) == 0
    assert local_fs.remove_stale_staging(3600, now=time.time() + 7200) == 1
    assert os.listdir(staged) == []
    with pytest.raises(FileNotFoundError):  # the writer was not dead after all: its content is gone
        handle.close()
    assert not local_fs.exists("a.txt")


def test_symlink_inside_pointing_outside_is_unsafe(local_fs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    local_fs.root.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, local_fs.root / "link")
    os.symlink(outside / "secret.txt", local_fs.root / "file_link")
    with pytest.raises(UnsafePath):
        local_fs.open("link/secret.txt")
    with pytest.raises(UnsafePath):
        local_fs.open("link/new.txt", "w")
    with pytest.raises(UnsafePath):
        local_fs.open("file_link")
    with pytest.raises(UnsafePath):
        local_fs.remove("file_link")
    with pytest.raises(UnsafePath):
        local_fs.listdir("link")
    assert not (outside / "new.txt").exists()
    assert (outside / "secret.txt").read_text() == "secret"


def test_gridfs_files_are_in_the_module_database(mongo):
    database = mongo["mod_gridcheck"]
    fs = GridFileStore(database, "gridcheck", KEY)
    write(fs, "a/b.txt", "one")
    write(fs, "a/b.txt", "two")
    fs.expire("a/b.txt", 100)
    docs = list(database[f"{BUCKET}.files"].find({"filename": "a/b.txt"}))
    assert len(docs) == 1  # the older upload was deleted
    assert docs[0]["length"] == 3
    assert docs[0]["metadata"]["expires"] > time.time()
    assert list(database[f"{BUCKET}.chunks"].find({"files_id": docs[0]["_id"]}))[0]["data"] == b"two"


SANDBOX_STEP = """
import json, os, sys, time
from sandbox.filestore import FileStore
uid, root, step = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.setgid(uid)
os.setuid(uid)
fs = FileStore(root, "mymod", b"k" * 32)
for name in ("a.txt", "b.txt", "c.txt", "d.txt") if step == "write" else ("d.txt",):
    with fs.open(name, "w") as handle:
        handle.write(name)
if step == "write":
    fs.expire("a.txt", 100)
else:
    fs.expire("b.txt", 100)
    fs.remove("c.txt")
    fs.expire("d.txt", 50)
print(json.dumps(sorted(fs.listdir())))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as hostd and as a sandbox's own uid")
def test_hostd_as_root_and_a_sandbox_under_its_own_uid_share_the_bookkeeping():
    """An isolated sandbox runs under a uid of its own while hostd's sweeper, as root, deletes for it."""
    uid = 61999
    root = tempfile.mkdtemp(prefix="insights-fs-uid-")
    try:
        os.chmod(root, 0o755)
        os.chown(root, uid, uid)
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

        def as_sandbox(step):
            done = subprocess.run([sys.executable, "-c", SANDBOX_STEP, str(uid), root, step], cwd=repo,
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)

        assert as_sandbox("write") == ["a.txt", "b.txt", "c.txt", "d.txt"]
        os.unlink(os.path.join(root, ".insights-lock"))  # as if hostd had made it first
        hostd = FileStore(root, "mymod", b"")
        assert hostd.purge_expired(now=time.time() + 200) == 1
        assert os.stat(os.path.join(root, ".insights-lock")).st_uid == 0
        assert as_sandbox("rewrite") == ["b.txt", "d.txt"]
        assert hostd.purge_expired(now=time.time() + 200) == 2
        assert [n for n in os.listdir(root) if not n.startswith(".insights-")] == []
    finally:
        shutil.rmtree(root, ignore_errors=True)
