"""A module's file store and its signed URLs (:mod:`sandbox.filestore`)."""
from __future__ import annotations

import os
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from sandbox.filestore import FileStore, UnsafePath, sign_path, verify_path

pytestmark = pytest.mark.timeout(60)

KEY = b"k" * 32


@pytest.fixture
def fs(tmp_path):
    return FileStore(tmp_path / "fs", "mymod", KEY)


def test_open_write_then_read(fs, tmp_path):
    with fs.open("report.txt", "w", encoding="utf-8") as handle:
        handle.write("hello")
    with fs.open("report.txt") as handle:
        assert handle.read() == "hello"
    assert (tmp_path / "fs" / "report.txt").read_text() == "hello"
    assert fs.root == tmp_path / "fs"


def test_binary_and_subfolders(fs, tmp_path):
    with fs.open("plots/a/chart.png", "wb") as handle:
        handle.write(b"\x89PNG")
    with fs.open("plots/a/chart.png", "rb") as handle:
        assert handle.read() == b"\x89PNG"
    assert (tmp_path / "fs" / "plots" / "a" / "chart.png").is_file()


def test_exists_and_remove(fs):
    assert not fs.exists("x.txt")
    with fs.open("x.txt", "w") as handle:
        handle.write("1")
    assert fs.exists("x.txt")
    fs.remove("x.txt")
    assert not fs.exists("x.txt")
    fs.remove("x.txt")  # missing is fine


def test_open_missing_file_for_reading(fs):
    with pytest.raises(FileNotFoundError):
        fs.open("nothing.txt")


def test_listdir(fs):
    assert fs.listdir() == []
    for name in ("b.txt", "a.txt", "sub/c.txt"):
        with fs.open(name, "w") as handle:
            handle.write(name)
    assert fs.listdir() == ["a.txt", "b.txt", "sub"]
    assert fs.listdir("sub") == ["c.txt"]


def test_listdir_hides_the_expiry_bookkeeping(fs):
    with fs.open("a.txt", "w") as handle:
        handle.write("1")
    fs.expire("a.txt", 3600)
    assert fs.listdir() == ["a.txt"]


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


@pytest.mark.parametrize("name", ["", "a\x00b", None, 3])
def test_invalid_names_are_unsafe(fs, name):
    with pytest.raises(UnsafePath):
        fs.open(name, "w")


def test_symlink_inside_pointing_outside_is_unsafe(fs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    fs.root.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, fs.root / "link")
    os.symlink(outside / "secret.txt", fs.root / "file_link")
    with pytest.raises(UnsafePath):
        fs.open("link/secret.txt")
    with pytest.raises(UnsafePath):
        fs.open("link/new.txt", "w")
    with pytest.raises(UnsafePath):
        fs.open("file_link")
    with pytest.raises(UnsafePath):
        fs.remove("file_link")
    with pytest.raises(UnsafePath):
        fs.listdir("link")
    assert not (outside / "new.txt").exists()
    assert (outside / "secret.txt").read_text() == "secret"


def test_expire_in_the_past_makes_the_file_vanish(fs, tmp_path):
    with fs.open("old.csv", "w") as handle:
        handle.write("x")
    with fs.open("keep.csv", "w") as handle:
        handle.write("y")
    fs.expire("old.csv", -1)
    assert not fs.exists("old.csv")
    assert not (tmp_path / "fs" / "old.csv").exists()
    assert fs.exists("keep.csv")
    assert fs.listdir() == ["keep.csv"]


def test_expired_file_cannot_be_opened(fs):
    with fs.open("old.csv", "w") as handle:
        handle.write("x")
    fs.expire("old.csv", -1)
    with pytest.raises(FileNotFoundError):
        fs.open("old.csv")


def test_expire_in_the_future_keeps_the_file(fs):
    with fs.open("soon.csv", "w") as handle:
        handle.write("x")
    fs.expire("soon.csv", 3600)
    assert fs.exists("soon.csv")
    with fs.open("soon.csv") as handle:
        assert handle.read() == "x"


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


def test_verify_rejects_tampering(fs):
    query = parse_qs(urlsplit(fs.get_url("a.txt")).query)
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


def test_get_url_already_expired(fs):
    query = parse_qs(urlsplit(fs.get_url("a.txt", expires=-10)).query)
    assert not verify_path(KEY, "mymod", "a.txt", query["expires"][0], query["sig"][0])
