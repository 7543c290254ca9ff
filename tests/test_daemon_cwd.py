"""hostd run from a folder that holds a package named like the runtime: sandboxes ignore it."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from running_hostd import Daemon, free_port, stop_daemon, wait_announced, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[1]
HOSTD = Path(sys.executable).parent / "hostd"  # the console script: its folder, not the cwd, on its path


@pytest.mark.parametrize("prewarm", ["true", "false"])
def test_a_sandbox_package_in_the_working_folder_does_not_shadow_the_runtime(tmp_path, prewarm):
    """Starting hostd from a checkout (as the README does) put that checkout first on the fork
    server's path; a confined sandbox then failed to import parts of the runtime it cannot see."""
    (tmp_path / "sandbox").mkdir()
    (tmp_path / "sandbox" / "__init__.py").write_text("raise ImportError('the wrong sandbox package')\n")
    modules = tmp_path / "modules"
    shutil.copytree(REPO / "contrib_modules" / "hello", modules / "hello")
    (modules / "charted").mkdir()
    (modules / "charted" / "__init__.py").write_text(
        "from sandbox import query\n\n\n@query()\ndef charted():\n"
        "    from sandbox.charts import count_chart, png\n"
        "    figure, axes = count_chart(2, 2)\n    axes.bar([0, 1], [1, 2], label='n')\n"
        "    return len(png(figure, axes, 't'))\n")
    config = tmp_path / "hostd.toml"
    config.write_text(f"[sandbox]\nprewarm = {prewarm}\n", encoding="utf-8")
    if not HOSTD.exists():
        pytest.skip(f"no hostd console script beside {sys.executable} (install the package)")
    data_dir = Path(tempfile.mkdtemp(prefix="insights-cwd-"))
    port, log_path = free_port(), tmp_path / "hostd.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen([str(HOSTD), "serve", "--data-dir", str(data_dir), "--port", str(port),
                                    "--config", str(config), "--modules", str(modules)],
                                   stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, cwd=tmp_path)
    daemon = Daemon(process, f"http://127.0.0.1:{port}", log_path, data_dir)
    try:
        wait_announced(daemon.process, daemon.log_path)
        states = wait_until(lambda: (lambda m: m if all(e["state"] in ("running", "failed") for e in m.values())
                                     else None)(daemon.modules()), 60, what="modules settled")
        assert {name: entry["state"] for name, entry in states.items()} == {"hello": "running",
                                                                             "charted": "running"}, states
        assert daemon.query("charted") > 100  # a PNG, drawn with a part of the runtime loaded late
    finally:
        stop_daemon(daemon)
