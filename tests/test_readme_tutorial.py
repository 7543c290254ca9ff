"""The README's "Your first module" runs as written.

Its blocks are taken in order: ``.. tutorial: shell`` blocks are run line by line
with ``HOME`` set to a temporary folder (so ``~/my_modules`` is a fresh one) and
``hostd`` being this checkout's; ``.. tutorial: file PATH`` blocks are written to
``~/my_modules/PATH``. Two changes only, so that the test can run beside anything
else on the machine: ``hostd serve`` gets ``--port`` (a free one) and ``--data-dir``
(under the temporary folder) and runs in the background, as the README's own
terminal would; the ``curl`` lines use that port instead of 8000.
"""
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.rst"
SECTION_TITLE = "Your first module"


def tutorial_blocks() -> list[tuple[str, str, str]]:
    """:returns: ``[(kind, argument, code)]`` of the tutorial section, in order: ``("shell", "",
        lines)`` or ``("file", path, text)``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n{SECTION_TITLE}\n" + "-" * len(SECTION_TITLE) + "\n")
    end = re.compile(r"\n[^\n]+\n-{3,}\n").search(text, start + len(SECTION_TITLE) + 2).start()
    blocks = []
    for match in re.finditer(r"^\.\. tutorial: (shell|file) ?(\S*)\n\n::\n\n((?:(?:    .*)?\n)+)",
                             text[start:end], re.M):
        blocks.append((match.group(1), match.group(2), textwrap.dedent(match.group(3)).strip("\n") + "\n"))
    return blocks


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Tutorial:
    """Runs the tutorial's blocks as a newcomer would, in a home of its own."""

    def __init__(self, home: Path):
        self.home = home
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        bin_dir = home / "bin"
        bin_dir.mkdir()
        hostd = bin_dir / "hostd"  # this checkout's hostd, whatever is installed
        hostd.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -c "
                         f"'from hostd.cli import main; main()' \"$@\"\n")
        hostd.chmod(0o755)
        self.env = {**os.environ, "HOME": str(home), "PATH": f"{bin_dir}:{os.environ['PATH']}",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        self.server = None
        self.outputs = []

    def shell(self, line: str) -> None:
        """Run one command line (from the repository's root, like the README's other commands)."""
        if line.startswith("hostd serve "):
            self._serve(line)
            return
        if line.startswith("curl "):
            line = line.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}")
        result = subprocess.run(line, shell=True, cwd=ROOT, env=self.env, capture_output=True, text=True,
                                timeout=240)
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
        self.outputs.append((line, result.stdout))

    def file(self, path: str, text: str) -> None:
        target = self.home / "my_modules" / path
        assert target.parent.is_dir(), f"{path}: its folder should exist after hostd new"
        target.write_text(text, encoding="utf-8")

    def _serve(self, line: str) -> None:
        command = f"{line} --port {self.port} --data-dir {shlex.quote(str(self.home / 'data'))}"
        self.log = open(self.home / "hostd.log", "wb")
        self.server = subprocess.Popen(command, shell=True, cwd=ROOT, env=self.env, stdout=self.log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                states = requests.get(f"{self.base}/modules", timeout=5).json()
                if states.get("video_plays", {}).get("state") == "running":
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.2)
        pytest.fail("hostd serve did not run video_plays:\n" + (self.home / "hostd.log").read_text())

    def stop(self) -> None:
        if self.server is not None:
            os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait()
            self.log.close()


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory):
    """The tutorial, run to its end (its server still up)."""
    runner = Tutorial(tmp_path_factory.mktemp("home"))
    try:
        for kind, argument, code in tutorial_blocks():
            if kind == "file":
                runner.file(argument, code)
            else:
                for line in code.splitlines():
                    if line.strip():
                        runner.shell(line)
        yield runner
    finally:
        runner.stop()


def test_the_tutorial_has_its_steps():
    kinds = [(kind, argument) for kind, argument, _code in tutorial_blocks()]
    assert kinds == [("shell", ""), ("file", "video_plays/__init__.py"), ("file", "video_plays/templates/page.html"),
                     ("file", "video_plays/tests/test_video_plays.py"), ("shell", ""), ("shell", ""), ("shell", "")]


def test_the_modules_own_tests_ran_and_passed(tutorial):
    line, output = next((line, out) for line, out in tutorial.outputs if line.startswith("hostd test "))
    assert re.search(r"\b2 passed\b", output), output


def test_the_served_module_counts_the_events_sent_with_curl(tutorial):
    answer = tutorial.outputs[-1][1]
    assert json.loads(answer) == [{"video": "intro", "plays": 2}]  # what the README says it answers


def test_the_view_and_the_dashboard_show_it(tutorial):
    page = requests.get(f"{tutorial.base}/view/video_plays_page?limit=3", timeout=30)
    assert page.status_code == 200 and "<td>intro</td><td>2</td>" in page.text
    dashboard = requests.get(f"{tutorial.base}/", timeout=30).text
    assert 'id="module-video_plays"' in dashboard and 'id="view-video_plays_page"' in dashboard
    assert 'data-param="limit"' in dashboard
