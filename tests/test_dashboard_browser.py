"""The dashboard in a real headless Chromium (Debian package ``chromium``).

Chromium loads ``/`` from a real ``hostd serve``, runs its script and lets each
view's frame load (``--virtual-time-budget``), then dumps the DOM we check.
"""
import html
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def dashboard_url(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("headless Chromium is not installed (Debian package 'chromium'; .ci/run installs it)")
    base = tmp_path_factory.mktemp("browser")
    port = _free_port()
    log = open(base / "hostd.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-c", "from hostd.cli import main; main()", "serve", "--data-dir", str(base / "data"),
         "--port", str(port), "--workers", "2", "--modules", str(ROOT / "contrib_modules")],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                states = requests.get(url + "modules", timeout=5).json()
                if states and all(m["state"] == "running" for m in states.values()):
                    break
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.2)
        else:
            pytest.fail("hostd did not get ready:\n" + (base / "hostd.log").read_text())
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _rendered_dom(url, tmp_path):
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000", "--dump-dom", url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _frames(dom):
    return {m.group("id"): m.group(0) for m in re.finditer(r'<iframe id="frame-(?P<id>[^"]+)"[^>]*>', dom)}


def test_every_view_without_required_parameters_loads_in_its_frame(dashboard_url, tmp_path):
    dom = _rendered_dom(dashboard_url, tmp_path)
    frames = _frames(dom)
    for view in ("hello_world", "user_count_view", "event_count_view"):
        assert view in frames, f"no frame for {view}"
        assert 'data-loaded="true"' in frames[view], frames[view]
        assert f'src="/view/{view}"' in frames[view]
    for module in ("hello", "grades", "event_count", "dump_to_db"):
        assert f'id="module-{module}"' in dom


def test_views_with_required_parameters_wait_for_their_form(dashboard_url, tmp_path):
    dom = _rendered_dom(dashboard_url, tmp_path)
    frames = _frames(dom)
    for view, param in (("hello_user", "user"), ("plot_grades", "course")):
        assert "src=" not in frames[view], f"{view} was loaded without its required parameter"
        form = re.search(rf'<form class="params" data-target="frame-{view}".*?</form>', dom, re.S)
        assert form is not None and f'name="{param}"' in form.group(0)


def test_a_loaded_frame_shows_the_view_itself(dashboard_url, tmp_path):
    """Load one view's frame URL as the dashboard does and check what it shows."""
    dom = _rendered_dom(dashboard_url + "view/hello_user?user=" + "%3Cb%3Eann", tmp_path)
    assert "Hello" in dom and html.escape("<b>ann") in dom and "<b>ann" not in dom
