"""``GET /static/{module}/{path}`` against a real ``hostd serve``: content types, traversal refused."""
import http.client
from urllib.parse import urlsplit

import pytest

from running_hostd import start_daemon, stop_daemon

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("static")
    (tmp / "secret.txt").write_text("outside-secret")
    modules = tmp / "modules"
    static = modules / "site" / "static"
    (static / "img").mkdir(parents=True)
    (modules / "site" / "__init__.py").write_text("")
    (modules / "site" / "code.txt").write_text("next-to-static")
    (static / "style.css").write_text("body { color: red }")
    (static / "img" / "logo.png").write_bytes(PNG)
    (static / "data.json").write_text('{"a": 1}')
    (static / "leak.txt").symlink_to(tmp / "secret.txt")
    (static / "alias.css").symlink_to(static / "style.css")  # a symlink that stays inside is fine
    elsewhere = tmp / "checkout" / "static"  # a module folder that is itself a symlink
    elsewhere.mkdir(parents=True)
    (elsewhere.parent / "__init__.py").write_text("")
    (elsewhere / "linked.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    (modules / "linked").symlink_to(elsewhere.parent, target_is_directory=True)
    running = start_daemon(tmp, modules, running={"site", "linked"}, failed=set())
    yield running
    stop_daemon(running)


def _raw_get(daemon, path):
    """GET ``path`` exactly as written (no client-side normalisation of ``..``)."""
    url = urlsplit(daemon.base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("path, content_type, body", [
    ("/static/site/style.css", "text/css", b"body { color: red }"),
    ("/static/site/img/logo.png", "image/png", PNG),
    ("/static/site/data.json", "application/json", b'{"a": 1}'),
    ("/static/site/alias.css", "text/css", b"body { color: red }"),
    ("/static/linked/linked.svg", "image/svg+xml", b'<svg xmlns="http://www.w3.org/2000/svg"/>'),
])
def test_files_are_served_with_their_content_type(daemon, path, content_type, body):
    status, served_type, served = _raw_get(daemon, path)
    assert (status, served) == (200, body)
    assert served_type.split(";")[0] == content_type


@pytest.mark.parametrize("path", [
    "/static/site/../site/code.txt",
    "/static/site/%2e%2e/code.txt",
    "/static/site/img/%2E%2E/%2e%2e/code.txt",
    "/static/site/%2Fetc%2Fpasswd",
    "/static/site//etc/passwd",
    "/static/site/leak.txt",  # a symlink leading out
    "/static/site/style.css%00.png",
])
def test_paths_leading_out_of_static_are_forbidden(daemon, path):
    status, _, body = _raw_get(daemon, path)
    assert status == 403, (path, status, body)
    assert b"next-to-static" not in body and b"outside-secret" not in body and b"root:" not in body


def test_unknown_module_or_file_is_404(daemon):
    status, content_type, _ = _raw_get(daemon, "/static/nosuch/style.css")
    assert (status, content_type.split(";")[0]) == (404, "application/json")
    assert _raw_get(daemon, "/static/site/nosuch.css")[0] == 404
    assert _raw_get(daemon, "/static/site/img")[0] == 404
