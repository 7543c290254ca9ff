"""Loading a module folder into a description of its endpoints.

:func:`load_module` imports ``<folder>/__init__.py`` under a private name, finds
the functions the decorators marked, inspects each signature once, and returns a
:class:`LoadedModule`. Its :meth:`LoadedModule.describe` is what the sandbox
sends to hostd: hostd never imports module code.
"""
from __future__ import annotations

import importlib.util
import inspect
import itertools
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .decorators import EndpointSpec, endpoint_specs
from .errors import ModuleLoadError
from .injection import CallSignature, analyse

__all__ = ["MODULE_NAME", "Endpoint", "LoadedModule", "load_module", "read_manifest",
           "check_module_name"]

_loads = itertools.count(1)
MODULE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def check_module_name(name: str) -> str:
    """:raises ModuleLoadError: ``name`` is not ``[a-z][a-z0-9_]*``."""
    if not MODULE_NAME.match(name):
        raise ModuleLoadError(f"module name {name!r} must match [a-z][a-z0-9_]*")
    return name


def read_manifest(folder: str | Path) -> dict:
    """Read a module's optional ``module.toml``.

    :returns: ``{"module": {...}, "limits": {...}}`` (empty tables when absent).
    :raises ModuleLoadError: the file is not valid TOML.
    """
    path = Path(folder) / "module.toml"
    if not path.exists():
        return {"module": {}, "limits": {}}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ModuleLoadError(f"{path}: {err}") from err
    return {"module": dict(data.get("module", {})), "limits": dict(data.get("limits", {}))}


@dataclass(frozen=True)
class Endpoint:
    """One decorated function of a module, inspected.

    :param spec: what the decorator said.
    :param func: the function itself.
    :param signature: its inspected signature.
    """

    spec: EndpointSpec
    func: object
    signature: CallSignature

    @property
    def name(self) -> str:
        """The endpoint's main name."""
        return self.spec.names[0]

    def describe(self, module: str) -> dict:
        """:returns: a JSON/msgpack-able description (the ``/schema`` entry and more)."""
        doc = self.spec.description
        if doc is None:
            doc = inspect.cleandoc(getattr(self.func, "__doc__", None) or "")
        return {
            "class": self.spec.kind, "name": self.name, "aliases": list(self.spec.names[1:]),
            "module": module, "function": getattr(self.func, "__qualname__", self.name),
            "params": [p.describe() for p in self.signature.params],
            "category": self.signature.category, "doc": doc,
            "options": dict(self.spec.options),
        }


@dataclass
class LoadedModule:
    """A module loaded in this process.

    :param name: the module's name (its folder name).
    :param path: its folder.
    :param module: the imported Python module.
    :param endpoints: ``{(kind, name): Endpoint}``, aliases included.
    :param manifest: its ``module.toml`` contents.
    """

    name: str
    path: Path
    module: object
    endpoints: dict
    manifest: dict

    def describe(self) -> list[dict]:
        """:returns: one description per endpoint (aliases listed, not repeated)."""
        seen, out = set(), []
        for endpoint in self.endpoints.values():
            if id(endpoint) not in seen:
                seen.add(id(endpoint))
                out.append(endpoint.describe(self.name))
        return out

    def endpoint(self, kind: str, name: str) -> Endpoint | None:
        """:returns: the endpoint of that kind answering to ``name`` (or an alias), else None."""
        return self.endpoints.get((kind, name))


def _import(name: str, folder: Path):
    init = folder / "__init__.py"
    if not init.is_file():
        raise ModuleLoadError(f"module {name!r}: {init} not found")
    import_name = f"_insights_module_{name}_{next(_loads)}"  # a fresh package per load
    spec = importlib.util.spec_from_file_location(import_name, init,
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[import_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(import_name, None)
        raise
    return module


def load_module(folder: str | Path, name: str | None = None) -> LoadedModule:
    """Import the module in ``folder`` and describe its endpoints.

    :param folder: the module's folder (a symlink to it is followed).
    :param name: the module's name; default: the name of ``folder`` as given, so a
        symlink ``modules/stats -> ~/src/stats-v2`` is the module ``stats``.
    :raises ModuleLoadError: bad name, unsupported signature, or two endpoints of
        one kind claiming the same name (both are named).
    :raises Exception: whatever the module's own code raised while importing.
    """
    name = check_module_name(name or Path(folder).absolute().name)
    folder = Path(folder).resolve()
    manifest = read_manifest(folder)
    module = _import(name, folder)
    endpoints, owners, seen = {}, {}, set()
    for attribute in list(vars(module).values()):
        if not callable(attribute) or id(attribute) in seen:
            continue
        seen.add(id(attribute))
        for spec in endpoint_specs(attribute):
            where = f"{name}.{getattr(attribute, '__qualname__', attribute)}"
            endpoint = Endpoint(spec, attribute, analyse(attribute, kind=spec.kind, where=where))
            for endpoint_name in spec.names:
                if not _NAME.match(endpoint_name):
                    raise ModuleLoadError(f"{where}: invalid endpoint name {endpoint_name!r}")
                key = (spec.kind, endpoint_name)
                if key in endpoints:
                    raise ModuleLoadError(f"module {name!r}: {spec.kind} {endpoint_name!r} is defined"
                                          f" by both {owners[key]} and {where}")
                endpoints[key], owners[key] = endpoint, where
    return LoadedModule(name, folder, module, endpoints, manifest)
