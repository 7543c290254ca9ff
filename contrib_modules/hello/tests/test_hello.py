"""The hello module, run in a real sandbox by the module harness."""
from pathlib import Path

import pytest

from sandbox.errors import BadParameter
from sandbox.testing import ModuleHarness

pytestmark = pytest.mark.timeout(120)

MODULE = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def harness():
    with ModuleHarness(MODULE) as h:
        yield h


def test_hello_world(harness):
    assert harness.view("hello_world") == "<html>Hello world!</html>"


def test_hello_user_greets_by_name(harness):
    assert harness.view("hello_user", user="bob") == "<html>Hello bob</html>"


def test_hello_user_escapes_html(harness):
    page = harness.view("hello_user", user='<script>alert("x")</script> & co')
    assert page == "<html>Hello &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co</html>"
    assert "<script>" not in page


def test_hello_user_without_user_names_the_parameter(harness):
    with pytest.raises(BadParameter) as excinfo:
        harness.view("hello_user")
    assert excinfo.value.param == "user"
    assert "user" in str(excinfo.value)
