"""Hot reload against a real ``hostd serve``: module folders added, changed, broken, fixed, removed."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

QUERY = "from sandbox import query\n\n@query()\ndef {name}():\n    return {value}\n"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write(folder, name, value):
    folder.mkdir(exist_ok=True)
    (folder / "__init__.py").write_text(QUERY.format(name=name, value=value))


def _eventually(check, timeout_s=30.0):
    deadline = time.time() + timeout_s
    while True:
        try:
            result = check()
            if result:
                return result
        except (requests.RequestException, KeyError, ValueError):
            pass
        if time.time() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


@pytest.fixture
def daemon(tmp_path):
    modules = tmp_path / "modules"
    modules.mkdir()
    _write(modules / "alpha", "alpha_q", 1)
    _write(modules / "steady", "steady_q", 7)
    port = _free_port()
    log = open(tmp_path / "hostd.log", "wb")
    process = subprocess.Popen([sys.executable, "-c", "from hostd.cli import main; main()", "serve",
                                "--modules", str(modules), "--data-dir", str(tmp_path / "data"),
                                "--port", str(port), "--workers", "2"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _eventually(lambda: requests.get(f"{url}/query/steady_q", timeout=5).json() == 7, 60)
        yield url, modules
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        log.close()


def _modules(url):
    return requests.get(f"{url}/modules", timeout=10).json()


def _answer(url, name):
    answer = requests.get(f"{url}/query/{name}", timeout=10)
    return answer.json() if answer.status_code == 200 else None


def test_added_changed_broken_fixed_and_removed_folders(daemon):
    url, modules = daemon
    steady_pid = _modules(url)["steady"]["pid"]

    _write(modules / "beta", "beta_q", 2)  # added
    assert _eventually(lambda: _answer(url, "beta_q") == 2)

    _write(modules / "alpha", "alpha_q", 10)  # changed
    assert _eventually(lambda: _answer(url, "alpha_q") == 10)

    (modules / "alpha" / "__init__.py").write_text("raise RuntimeError('broken-on-purpose')\n")
    state = _eventually(lambda: _modules(url)["alpha"]["state"] == "failed" and _modules(url)["alpha"])
    assert "broken-on-purpose" in state["last_error"] and "Traceback" in state["last_error"]

    _write(modules / "alpha", "alpha_q", 11)  # fixed: healthy again
    assert _eventually(lambda: _answer(url, "alpha_q") == 11)

    import shutil
    shutil.rmtree(modules / "beta")  # removed
    assert _eventually(lambda: "beta" not in _modules(url))
    assert requests.get(f"{url}/query/beta_q", timeout=10).status_code == 404

    # the untouched module kept its process all along
    assert _modules(url)["steady"]["pid"] == steady_pid
    assert _answer(url, "steady_q") == 7


LINKED = """from pathlib import Path

from sandbox import query


@query()
def linked_q():
    return Path(__file__).with_name("answer.txt").read_text()
"""


def test_a_symlinked_module_folder_is_followed(daemon, tmp_path):
    url, modules = daemon
    target = tmp_path / "elsewhere" / "checkout-v2"  # not a module name: the link names the module
    target.mkdir(parents=True)
    (target / "__init__.py").write_text(LINKED)
    (target / "answer.txt").write_text("from the target")

    (modules / "linked").symlink_to(target, target_is_directory=True)
    # the sandbox reads a file of the target folder (under isolation too: what is bound in)
    assert _eventually(lambda: _answer(url, "linked_q") == "from the target")
    linked = _modules(url)["linked"]
    assert linked["path"] == str(target)
    if os.geteuid() == 0:  # isolated: the target was bound into the sandbox's private filesystem view
        assert "filesystem" in linked["confinement"], linked["confinement"]

    (target / "answer.txt").write_text("edited in the target")  # the watch follows the link
    (target / "__init__.py").write_text(LINKED + "\n")
    assert _eventually(lambda: _answer(url, "linked_q") == "edited in the target")

    other = tmp_path / "elsewhere" / "checkout-v3"  # repointed, as `ln -sfn` does: a new link renamed over
    other.mkdir()
    (other / "__init__.py").write_text(LINKED)
    (other / "answer.txt").write_text("from the new target")
    (tmp_path / "new-link").symlink_to(other, target_is_directory=True)
    os.replace(tmp_path / "new-link", modules / "linked")
    assert _eventually(lambda: _answer(url, "linked_q") == "from the new target")

    (modules / "linked").unlink()
    assert _eventually(lambda: "linked" not in _modules(url))
