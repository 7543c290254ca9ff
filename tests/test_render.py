"""``sandbox.render``: a module's Jinja2 templates, autoescaped, rendered in its real sandbox."""
import pytest

from running_hostd import wait_until

from sandbox import render
from sandbox.errors import ModuleRaised
from sandbox.testing import ModuleHarness

pytestmark = pytest.mark.timeout(120)

CODE = '''
from sandbox import render, view


@view()
def card(who: str):
    return render("card.html", {"who": who, "items": ["a&b", "<i>c</i>"]})


@view()
def missing():
    return render("nowhere.html", {})
'''


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    module = tmp_path_factory.mktemp("modules") / "cards"
    (module / "templates").mkdir(parents=True)
    (module / "__init__.py").write_text(CODE)
    (module / "templates" / "base.html").write_text("<html>{% block body %}{% endblock %}</html>")
    (module / "templates" / "card.html").write_text(
        '{% extends "base.html" %}{% block body %}<h1>{{ who }}</h1>'
        '{% for item in items %}<li>{{ item }}</li>{% endfor %}{% endblock %}')
    with ModuleHarness(module, data_dir=tmp_path_factory.mktemp("data")) as h:
        yield h


def test_render_escapes_context_values_inside_the_sandbox(harness):
    page = harness.view("card", who="<script>alert('x')</script>")
    assert page == ("<html><h1>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</h1>"
                    "<li>a&amp;b</li><li>&lt;i&gt;c&lt;/i&gt;</li></html>")


def test_a_missing_template_is_the_module_s_error(harness):
    with pytest.raises(ModuleRaised):
        harness.view("missing")
    # the sandbox's error report reaches /modules through the supervisor's queue, soon after
    wait_until(lambda: "nowhere.html" in (harness.status()["last_error"] or ""), 10,
               what="the template error in /modules")


def test_render_outside_a_sandbox_says_where_it_works():
    with pytest.raises(RuntimeError, match="ModuleHarness"):
        render("card.html", {})
