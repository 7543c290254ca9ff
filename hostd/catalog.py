"""The catalog of data layers: which event properties exist, learnt without running their code.

Every module folder may hold a ``properties.py`` (a data layer); installed
packages may register more under the ``insights.properties`` entry point.
hostd never imports them. A :class:`LayerDescriber` has a confined probe
sandbox import each one (:meth:`~hostd.launcher.Launcher.describe_layer`) and
keeps the answer until the layer's files change. A :class:`PropertyCatalog`
holds the accepted answers: ``GET /event_properties`` lists it, the handler
table asks it which filter paths are properties (those are decided in the
sandbox), and every sandbox gets it to import the layers it uses on first use.
"""
from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sandbox.errors import ModuleLoadError
from sandbox.properties import PropertyIndex

__all__ = ["PropertyCatalog", "LayerDescriber"]

log = logging.getLogger("insights.catalog")


class PropertyCatalog:
    """The accepted data layers and what they declare.

    :param layers: ``[{"origin", "file", "properties": [[ns, name, source, doc]], "sources": [...]}]``.
    :param failed: ``{origin: why}`` of layers left out.
    """

    def __init__(self, layers=(), failed=None):
        self.layers = list(layers)
        self.failed = dict(failed or {})
        self.index = PropertyIndex(
            [(layer["origin"], *entry) for layer in self.layers for entry in layer["properties"]],
            [(layer["origin"], name) for layer in self.layers for name in layer["sources"]])

    @classmethod
    def accept(cls, described: dict, order) -> "PropertyCatalog":
        """Accept described layers first come, first served.

        :param described: ``{origin: layer dict}`` of the layers whose probe answered.
        :param order: the origins in claiming order; a layer that claims what an earlier
            one holds is left out, with an error naming both.
        """
        accepted, failed = [], {}
        for origin in order:
            if origin not in described:
                continue
            try:
                cls(accepted + [described[origin]])
            except ModuleLoadError as err:
                failed[origin] = str(err)
                continue
            accepted.append(described[origin])
        return cls(accepted, failed)

    def property_prefix(self, path: str) -> tuple | None:
        """:returns: ``(namespace, name)`` of the property a filter path starts with, else None."""
        return self.index.property_prefix(path)

    def is_property_path(self, path: str) -> bool:
        """Whether a filter path reads an event property (decided in the sandbox)."""
        return self.index.property_prefix(path) is not None

    def describe(self) -> list[dict]:
        """:returns: the ``/event_properties`` list."""
        return self.index.describe()

    def for_sandboxes(self) -> dict:
        """:returns: what a sandbox needs to import layers on first use (its spec's ``layers``)."""
        return {"layers": self.layers, "failed": self.failed}


def _fingerprint(file: str | None) -> str:
    """:returns: a digest of a layer's folder's Python files (a layer may import its siblings)."""
    if file is None:
        return ""
    digest = hashlib.sha256()
    for path in sorted(Path(file).parent.glob("*.py")):
        try:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        except OSError:
            continue
    return digest.hexdigest()


class LayerDescriber:
    """Describes data layers through confined probes, remembering answers until files change.

    :param probe: ``probe(identity, folder, layer) -> description``, raising
        :class:`ModuleLoadError` (the launcher's :meth:`~hostd.launcher.Launcher.describe_layer`
        with the limits bound).
    :param workers: probes run at once.
    """

    def __init__(self, probe, workers: int = 4):
        self._probe = probe
        self._workers = workers
        self._known: dict = {}  # origin -> (fingerprint, description or error)

    def describe(self, layers: dict) -> tuple[dict, dict]:
        """Describe ``{origin: (identity, folder, file)}``.

        :returns: ``({origin: layer dict}, {origin: error})``.
        """
        wanted = {origin: (*where, _fingerprint(where[2])) for origin, where in layers.items()}
        stale = [o for o, w in wanted.items() if self._known.get(o, (None,))[0] != w[3]]

        def probe(origin):
            identity, folder, file, _ = wanted[origin]
            layer = {"origin": origin, "file": file}
            try:
                return {**layer, **self._probe(identity, folder, layer)}
            except ModuleLoadError as err:
                return err
            except Exception as err:  # the probe could not even start (spawn, store relay...)
                return ModuleLoadError(f"{file or origin} could not be described: {err}")

        if stale:
            with ThreadPoolExecutor(min(self._workers, len(stale)), thread_name_prefix="insights-probe") as pool:
                for origin, answer in zip(stale, pool.map(probe, stale)):
                    self._known[origin] = (wanted[origin][3], answer)
        described, errors = {}, {}
        for origin in wanted:
            answer = self._known[origin][1]
            if isinstance(answer, Exception):
                errors[origin] = str(answer)
            else:
                answer.pop("confinement", None)
                described[origin] = answer
        for origin in set(self._known) - set(wanted):
            del self._known[origin]
        return described, errors
