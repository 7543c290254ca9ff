"""The grades module, run in a real sandbox by the module harness."""
import html
import re
import statistics
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from sandbox.errors import BadParameter
from sandbox.testing import ModuleHarness

pytestmark = pytest.mark.timeout(120)

MODULE = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def harness():
    with ModuleHarness(MODULE) as h:
        yield h


def _img_src(page: str) -> str:
    match = re.search(r'<img src="([^"]+)"', page)
    assert match, page
    return html.unescape(match.group(1))


def test_grades_have_the_right_shape_and_range(harness):
    grades = harness.query("get_grades", course="CS101")
    assert len(grades) == 1000
    assert all(len(row) == 4 and all(isinstance(g, float) for g in row) for row in grades)
    flat = [g for row in grades for g in row]
    assert 69 < statistics.fmean(flat) < 71
    assert 2.5 < statistics.pstdev(flat) < 3.5


def test_grades_repeat_for_a_course_and_differ_between_courses(harness):
    first = harness.query("get_grades", course="CS101")
    assert harness.query("get_grades", course="CS101") == first
    assert harness.query("get_grades", course="CS102") != first


def test_get_grades_without_course_names_the_parameter(harness):
    with pytest.raises(BadParameter) as excinfo:
        harness.query("get_grades")
    assert excinfo.value.param == "course"


def test_plot_grades_writes_a_png_and_links_it_with_a_signed_url(harness):
    page = harness.view("plot_grades", course="CS101")
    url = urlsplit(_img_src(page))
    match = re.fullmatch(r"/fs/grades/(grades-[A-Za-z0-9_-]+\.png)", url.path)
    assert match, url.path
    query = parse_qs(url.query)
    assert set(query) == {"expires", "sig"}
    assert query["expires"][0].isdigit()
    assert re.fullmatch(r"[0-9a-f]{64}", query["sig"][0])
    png = harness.fs_root / match.group(1)
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert png.stat().st_size > 1000
    assert "CS101" in page


def test_plot_grades_escapes_the_course_and_keeps_the_file_name_safe(harness):
    course = '<b>Intro</b> & "/../etc"'
    page = harness.view("plot_grades", course=course)
    assert "<b>" not in page
    assert html.escape(course) in page
    name = urlsplit(_img_src(page)).path.rsplit("/", 1)[1]
    assert re.fullmatch(r"grades-[A-Za-z0-9_-]+\.png", name)
    assert (harness.fs_root / name).read_bytes().startswith(PNG_MAGIC)


def test_plot_grades_with_an_empty_course_is_a_bad_parameter(harness):
    with pytest.raises(BadParameter) as excinfo:
        harness.view("plot_grades", course="  ")
    assert excinfo.value.param == "course"
