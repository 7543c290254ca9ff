"""``hostd serve`` and its HTTP port: a taken port is a clear error, port 0 picks one."""
import re
import socket
import subprocess
import sys

import pytest
import requests

from running_hostd import wait_announced

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _serve(tmp_path, port, **popen):
    (tmp_path / "modules").mkdir(exist_ok=True)
    command = [sys.executable, "-c", "from hostd.cli import main; main()", "serve", "--port", str(port),
               "--modules", str(tmp_path / "modules"), "--data-dir", str(tmp_path / "data")]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, cwd=tmp_path, **popen)


def test_a_port_in_use_is_an_error_naming_it_and_the_flag(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = _serve(tmp_path, port, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            output, _ = process.communicate(timeout=60)
        finally:
            process.kill()
            process.wait()
    assert process.returncode != 0, output
    assert f"port {port}" in output and "--port" in output, output
    assert "Insights dashboard" not in output, output


def test_port_zero_serves_on_the_free_port_it_announces(tmp_path):
    log_path = tmp_path / "hostd.log"
    with open(log_path, "wb") as log:
        process = _serve(tmp_path, 0, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_announced(process, log_path)
        url = re.search(r"Insights dashboard: (http://\S+)", log_path.read_text()).group(1)
        assert not url.endswith(":0/"), url
        assert requests.get(url + "healthz", timeout=10).json()["status"] == "ok"
    finally:
        process.terminate()
        status = process.wait(30)
    assert status == 0, log_path.read_text()
