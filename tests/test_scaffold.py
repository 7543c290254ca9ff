"""``hostd new`` and ``hostd test``: a fresh module passes its own tests in the harness."""
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from hostd import scaffold

pytestmark = pytest.mark.timeout(240)

HOSTD = [sys.executable, "-c", "from hostd.cli import main; main()"]


def _hostd(*args, cwd):
    return subprocess.run([*HOSTD, *args], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=200)


def test_a_fresh_module_passes_hostd_test_and_a_broken_one_fails(tmp_path):
    created = _hostd("new", "grade_probe", "--dir", "mods", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    module = tmp_path / "mods" / "grade_probe"
    for part in ("__init__.py", "module.toml", "templates/page.html", "static/style.css",
                 "tests/test_grade_probe.py"):
        assert (module / part).is_file(), part

    passed = _hostd("test", str(module), cwd=tmp_path)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "2 passed" in passed.stdout, passed.stdout
    assert not list(module.rglob("__pycache__")), "hostd test wrote into the module folder"

    code = module / "__init__.py"  # the count off by one: its test must catch it
    code.write_text(code.read_text().replace('doc["count"] if doc', 'doc["count"] + 1 if doc'))
    failed = _hostd("test", "mods/grade_probe", "-k", "counts", cwd=tmp_path)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "1 failed" in failed.stdout, failed.stdout


@pytest.mark.parametrize("name", ["Grades", "1st", "my-module", "_private", "a.b", "ok/../up", ""])
def test_new_refuses_a_bad_name(tmp_path, name):
    result = CliRunner().invoke(scaffold.new, [name, "--dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "[a-z][a-z0-9_]*" in result.output
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kind", ["folder", "file", "dangling symlink"])
def test_new_refuses_to_overwrite(tmp_path, kind):
    existing = tmp_path / "taken"
    if kind == "folder":
        existing.mkdir()
        (existing / "keep.txt").write_text("mine")
    elif kind == "file":
        existing.write_text("mine")
    else:
        existing.symlink_to(tmp_path / "nowhere")
    result = CliRunner().invoke(scaffold.new, ["taken", "--dir", str(tmp_path)])
    assert result.exit_code != 0
    assert f"{existing} already exists" in result.output
    assert sorted(os.listdir(tmp_path)) == ["taken"]  # nothing else written either
    if kind == "folder":
        assert os.listdir(existing) == ["keep.txt"]


def test_hostd_test_refuses_what_is_not_a_module(tmp_path):
    runner = CliRunner()
    (tmp_path / "plain").mkdir()
    assert "not a module folder" in runner.invoke(scaffold.test, [str(tmp_path / "plain")]).output
    (tmp_path / "untested").mkdir()
    (tmp_path / "untested" / "__init__.py").write_text("")
    assert "no tests/ folder" in runner.invoke(scaffold.test, [str(tmp_path / "untested")]).output
