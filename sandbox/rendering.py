"""Templates of a module, rendered with Jinja2: ``sandbox.render(template, context)``.

A module keeps its templates in its ``templates/`` folder. They are rendered
with autoescape on, so text from a request or an event cannot inject markup::

    from sandbox import render, view

    @view()
    def greeting(user):
        return render("greeting.html", {"user": user})

A sandbox runs one module: its runtime installs that module's
:class:`Templates` with :func:`use` before importing it, and :func:`render`
renders with them. Nothing is set up at import.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["Templates", "use", "render"]

_installed: list = []  # the Templates of the module this process runs (set by the runtime)


class Templates:
    """The templates of one module folder; Jinja2 is imported on first use.

    :param module_dir: the module's folder (templates come from its ``templates/``).
    """

    def __init__(self, module_dir: str | Path):
        self.folder = Path(module_dir) / "templates"
        self._environment = None

    @property
    def environment(self):
        """The Jinja2 environment (autoescape on, templates reloaded when their file changes)."""
        if self._environment is None:
            import jinja2  # here: modules that never render do not pay for it
            self._environment = jinja2.Environment(loader=jinja2.FileSystemLoader(self.folder),
                                                   autoescape=True)
        return self._environment

    def render(self, template: str, context: dict | None = None) -> str:
        """:returns: ``template`` rendered with ``context``.

        :raises jinja2.TemplateNotFound: no such file in ``templates/`` (paths with
            ``..`` never leave it).
        """
        return self.environment.get_template(template).render(context or {})


def use(templates: Templates) -> None:
    """Make ``templates`` the ones :func:`render` uses in this process (the runtime calls it)."""
    _installed[:] = [templates]


def render(template: str, context: dict | None = None) -> str:
    """Render ``templates/<template>`` of the module this sandbox runs (Jinja2, autoescaped).

    :param template: a path relative to the module's ``templates/`` folder.
    :param context: the template's variables.
    :returns: the rendered text (a view returns it).
    :raises RuntimeError: called outside a sandbox (test a module with
        :class:`sandbox.testing.ModuleHarness`, which runs one).
    """
    if not _installed:
        raise RuntimeError("sandbox.render() works in a module's sandbox: hostd serve, or"
                           " sandbox.testing.ModuleHarness in tests")
    return _installed[0].render(template, context)
