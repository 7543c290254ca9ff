"""The README's example modules run as written, in a real sandbox."""
import base64
import re
import textwrap
from pathlib import Path

import pytest

from sandbox.testing import ModuleHarness

pytestmark = pytest.mark.timeout(180)

README = Path(__file__).resolve().parents[1] / "README.rst"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def example_module(label: str) -> str:
    """:returns: the code of the literal block after ``.. example-module: <label>`` in the README."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^\.\. example-module: {label}\n\n::\n\n((?:(?:    .*)?\n)+)", text, re.M)
    assert match, f"no example-module {label!r} in the README"
    return textwrap.dedent(match.group(1))


@pytest.fixture(scope="module")
def charts(tmp_path_factory):
    module = tmp_path_factory.mktemp("modules") / "charts"
    module.mkdir()
    (module / "__init__.py").write_text(example_module("charts"))
    with ModuleHarness(module, data_dir=tmp_path_factory.mktemp("data")) as harness:
        yield harness


def test_chart_in_the_file_store_is_a_png_behind_a_signed_url(charts):
    page = charts.view("chart_in_file_store")
    assert re.fullmatch(r'<img src="/fs/charts/grades\.png\?expires=\d+&sig=[0-9a-f]+" alt="Grades">', page), page
    assert (charts.fs_root / "grades.png").read_bytes().startswith(PNG_MAGIC)


def test_chart_as_a_data_uri_is_an_inline_png(charts):
    page = charts.view("chart_as_data_uri")
    data = re.fullmatch(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="Grades">', page).group(1)
    assert base64.b64decode(data).startswith(PNG_MAGIC)


def test_chart_as_svg_is_inline_markup(charts):
    page = charts.view("chart_as_svg")
    assert page.startswith("<html><body>") and "<svg" in page and page.endswith("</svg>\n</body></html>")
