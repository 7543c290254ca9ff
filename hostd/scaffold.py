"""``hostd new NAME``: a new module with a test; ``hostd test PATH``: run a module's tests.

The new module has one of each: an event handler counting each user's events,
a query answering a user's count, and a view rendering it with a template (and
a stylesheet from ``static/``), plus a ``module.toml`` and ``tests/test_NAME.py``
running it in the harness. Its
endpoint names start with the module's name, so they do not collide with other
modules' endpoints. Its tests pass as created.
"""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path
from string import Template

import click

from sandbox.loader import MODULE_NAME

__all__ = ["new", "test", "create_module", "pytest_command"]

_FILES = {
    "__init__.py": '''\
"""$name: counts each user's events and shows the count.

* handler ``count_events``: one more per event, for the event's ``username``;
* query ``${name}_count?user=...``: that user's count;
* view ``${name}_page?user=...``: the count, as HTML (``templates/page.html``).
"""
from sandbox import event_handler, query, render, view

COUNTS = "counts"


def _user_id(user: str) -> str:
    return f"user|{user}"


@event_handler()
def count_events(db, events):
    """Add one to the count of each event's user."""
    for event in events:
        user = event.get("username")
        if isinstance(user, str) and user:
            db[COUNTS].update_one({"_id": _user_id(user)}, {"$$inc": {"count": 1}}, upsert=True)


@query()
def ${name}_count(db, user: str) -> int:
    """How many events ``user`` sent."""
    doc = db[COUNTS].find_one({"_id": _user_id(user)})
    return doc["count"] if doc else 0


@view()
def ${name}_page(query, user: str) -> str:
    """A page showing how many events ``user`` sent."""
    return render("page.html", {"user": user, "count": query.${name}_count(user=user)})
''',
    "module.toml": '''\
[module]
description = "$name: counts each user's events"
version = "0.1.0"

# [limits]
# call_timeout_s = 5
''',
    "templates/page.html": '''\
<html>
<head><link rel="stylesheet" href="/static/$name/style.css"></head>
<body>
  {# values are escaped: a user name cannot inject markup #}
  <p><b>{{ user }}</b> sent {{ count }} event{{ "" if count == 1 else "s" }}.</p>
</body>
</html>
''',
    "static/style.css": '''\
/* served at /static/$name/style.css */
body { font-family: sans-serif; margin: 2em; }
''',
    "tests/test_$name.py": '''\
"""The $name module in a real sandbox, with a real store (run: hostd test <its folder>)."""
from pathlib import Path

import pytest

from sandbox.testing import ModuleHarness

MODULE = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def harness():
    with ModuleHarness(MODULE) as h:
        yield h


def test_counts_each_users_events(harness):
    harness.send_events([{"username": "ada", "event_type": "play_video"},
                         {"username": "ada", "event_type": "pause_video"},
                         {"username": "bob", "event_type": "play_video"}])
    assert harness.query("${name}_count", user="ada") == 2
    assert harness.query("${name}_count", user="nobody") == 0


def test_page_shows_the_count_and_escapes_the_name(harness):
    page = harness.view("${name}_page", user="<i>eve</i>")
    assert "<b>&lt;i&gt;eve&lt;/i&gt;</b> sent 0 events." in page
''',
}


def create_module(name: str, parent: Path) -> Path:
    """Write a new module folder ``parent/name``.

    The files are written in a hidden folder first, then renamed into place, so a
    running hostd watching ``parent`` sees the module appear complete.

    :returns: the new folder.
    :raises click.ClickException: ``name`` is not a module name, or the folder exists.
    """
    if not MODULE_NAME.match(name):
        raise click.ClickException(f"invalid module name {name!r}: use lower-case letters, digits and _,"
                                   f" starting with a letter ([a-z][a-z0-9_]*)")
    target = parent / name
    if os.path.lexists(target):
        raise click.ClickException(f"{target} already exists; choose another name or --dir")
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{name}.new-{os.getpid()}"
    try:
        for relative, text in _FILES.items():
            path = staging / Template(relative).substitute(name=name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(Template(text).substitute(name=name), encoding="utf-8")
        if os.path.lexists(target):  # appeared meanwhile: renaming would replace an empty folder
            raise click.ClickException(f"{target} already exists; choose another name or --dir")
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # only left when something failed
    return target


def pytest_command(module: Path, args=()) -> list[str]:
    """:returns: the command running ``module``'s ``tests/`` with pytest, rooted at the module."""
    # -P: the current folder stays off sys.path (isolated sandboxes get every sys.path folder
    # bound in with its own permissions, and a private one would hide the module from them)
    command = [sys.executable, "-P", "-m", "pytest", str(module / "tests"), "--rootdir", str(module),
               "-p", "no:cacheprovider"]
    plugins = {ep.value for ep in importlib.metadata.entry_points(group="pytest11")}
    if "sandbox.pytest_plugin" not in plugins:  # not installed (run from a checkout): load it by name
        command += ["-p", "sandbox.pytest_plugin"]
    return command + list(args)


@click.command()
@click.argument("name")
@click.option("--dir", "parent", default=".", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to create the module in (a modules dir hostd serves, for example).")
def new(name, parent):
    """Create module NAME: a handler, a query, a view with a template, module.toml and a test."""
    folder = create_module(name, parent)
    click.echo(f"Created module {name} in {folder}\n"
               f"  test it:  hostd test {folder}\n"
               f"  serve it: hostd serve --modules {parent}")


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def test(path, pytest_args):
    """Run the tests of the module in PATH (its tests/ folder) with pytest and the harness.

    Arguments after PATH go to pytest, e.g. ``hostd test mymodule -k page -x``.
    The exit status is pytest's.
    """
    module = path.resolve()
    if not MODULE_NAME.match(path.absolute().name) or not (module / "__init__.py").is_file():
        raise click.ClickException(f"{path} is not a module folder (a folder named [a-z][a-z0-9_]*"
                                   f" with an __init__.py)")
    if not (module / "tests").is_dir():
        raise click.ClickException(f"{path} has no tests/ folder")
    root = str(Path(__file__).resolve().parents[1])  # the sandbox package, as hostd itself found it
    # no __pycache__ in the module: a hostd serving its folder would take it for an edit and restart it
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    sys.exit(subprocess.call(pytest_command(module, pytest_args), env=env))
