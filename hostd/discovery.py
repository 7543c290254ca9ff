"""Finding module folders and their event properties: done here, in one place.

A host discovers its modules when it starts and again on every hot reload; both
go through :func:`discover`, which also has the ``properties.py`` of every
module (and of the extra data-layer folders the harness names, and of installed
packages) described by confined probes, into one
:class:`~hostd.catalog.PropertyCatalog`. Nothing here imports module code.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.errors import ModuleLoadError
from sandbox.loader import MODULE_NAME
from sandbox.properties import entry_point_names, properties_file

from .catalog import PropertyCatalog

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
    #: the event properties of every data layer that was described and accepted.
    properties: PropertyCatalog = field(default_factory=PropertyCatalog)

    def names(self) -> set:
        """:returns: every module name seen, loadable or not."""
        return set(self.folders) | set(self.errors)


def discover(module_paths, describer, explicit: dict | None = None, property_modules=(), first=()) -> Discovery:
    """Look at the module folders and have their data layers described.

    :param module_paths: folders of module folders (``modules.paths``).
    :param describer: the host's :class:`~hostd.catalog.LayerDescriber`.
    :param explicit: ``{name: folder}`` to use instead of looking (the harness).
    :param property_modules: more folders whose ``properties.py`` is a data layer without
        running the module (data layers in the harness).
    :param first: modules whose property claims come first (those already serving, on a reload).
    :raises ModuleLoadError: a data-layer folder's properties do not load.
    """
    if explicit is not None:
        found, errors = dict(explicit), {}
    else:
        found, errors = discover_modules(module_paths)
    folders = dict(found)
    for folder in property_modules:
        folder = Path(folder).resolve()
        folders.setdefault(folder.name, folder)
    layers = {f"package {name}": ("insights_packages", None, None) for name in entry_point_names()}
    layers.update({f"module {name}": (name, folder, str(properties_file(folder)))
                   for name, folder in folders.items() if properties_file(folder) is not None})
    described, failed = describer.describe(layers)
    order = [o for o in layers if o.startswith("package ")]
    order += [f"module {n}" for n in first] + sorted(o for o in layers if o.startswith("module ")
                                                     and o.removeprefix("module ") not in first)
    catalog = PropertyCatalog.accept(described, order)
    failed.update(catalog.failed)
    catalog.failed = failed
    for origin, error in failed.items():
        kind, _, name = origin.partition(" ")
        if kind != "module" or name not in found:
            raise ModuleLoadError(f"{origin}: {error}")
        errors[name] = error
    return Discovery(found, errors, catalog)
