"""Finding module folders and their event properties: done here, in one place.

A host discovers its modules when it starts and again on every hot reload; both
go through :func:`discover`, which also loads the ``properties.py`` of every
module (and of the extra data-layer folders the harness names) into one
:class:`~sandbox.properties.PropertyRegistry`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.errors import ModuleLoadError
from sandbox.loader import MODULE_NAME
from sandbox.properties import PropertyRegistry, load_registry, properties_file

__all__ = ["Discovery", "discover", "discover_modules"]

log = logging.getLogger("insights.discovery")


def discover_modules(paths) -> tuple[dict, dict]:
    """Find module folders (``<dir>/<name>/__init__.py``) under each of ``paths``.

    :returns: ``({name: folder}, {name: error})``; a name found twice is an error naming both.
    """
    found, errors = {}, {}
    for base in paths:
        base = Path(base)
        if not base.is_dir():
            log.warning("modules path %s is not a folder", base)
            continue
        for folder in sorted(base.iterdir()):
            if not (folder / "__init__.py").is_file() or not MODULE_NAME.match(folder.name):
                continue
            if folder.name in found:
                errors[folder.name] = f"module {folder.name!r} found twice: {found[folder.name]} and {folder}"
                continue
            found[folder.name] = folder.resolve()
    return found, errors


@dataclass
class Discovery:
    """What one look at the module folders found."""

    #: ``{name: folder}`` of every module folder found (also those in ``errors``).
    folders: dict = field(default_factory=dict)
    #: ``{name: error}`` of modules that cannot run (found twice, bad properties...).
    errors: dict = field(default_factory=dict)
    #: the event properties of every module that declares some.
    properties: PropertyRegistry = field(default_factory=PropertyRegistry)
    #: ``{module: path of its properties.py}`` that loaded, for the sandboxes.
    properties_files: dict = field(default_factory=dict)

    def names(self) -> set:
        """:returns: every module name seen, loadable or not."""
        return set(self.folders) | set(self.errors)


def discover(module_paths, explicit: dict | None = None, property_modules=(), first=()) -> Discovery:
    """Look at the module folders and load their event properties.

    :param module_paths: folders of module folders (``modules.paths``).
    :param explicit: ``{name: folder}`` to use instead of looking (the harness).
    :param property_modules: more folders whose ``properties.py`` is loaded without
        running the module (data layers in the harness).
    :param first: modules whose property claims come first (those already serving, on a reload).
    :raises ModuleLoadError: a data-layer folder's properties do not load.
    """
    if explicit is not None:
        found, errors = dict(explicit), {}
    else:
        found, errors = discover_modules(module_paths)
    files = {name: properties_file(folder) for name, folder in found.items()}
    for folder in property_modules:
        folder = Path(folder).resolve()
        files.setdefault(folder.name, properties_file(folder))
    registry, property_errors = load_registry({n: f for n, f in files.items() if f}, first=first)
    for name, error in property_errors.items():
        if name not in found:
            raise ModuleLoadError(error)
        errors[name] = error
    loaded = {name: str(path) for name, path in files.items() if path and name not in property_errors}
    return Discovery(found, errors, registry, loaded)
