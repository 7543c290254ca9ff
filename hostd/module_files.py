"""Modules' files as hostd reaches them: to serve signed URLs and to sweep expired files.

The file store of a module is on the backend ``storage.fs`` names: the folder
``<data_dir>/modules/<module>/fs``, or the GridFS bucket of the module's database.
hostd opens stores with an empty URL key: it checks signatures, it never makes them.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from sandbox.filestore import BaseFileStore, open_file_store

from .store import connect, module_db_name, store_url_path

__all__ = ["ModuleFiles", "WebFiles"]

_DB_PREFIX = module_db_name("x")[:-1]  # "mod_": what a module's database name starts with


class ModuleFiles:
    """Every module's file store on one backend.

    :param backend: ``"local"`` or ``"gridfs"`` (``storage.fs``).
    :param modules_dir: ``<data_dir>/modules``, holding ``<module>/fs`` (local backend).
    :param client: a ``pymongo`` client of the store (gridfs backend).
    """

    def __init__(self, backend: str, modules_dir: str | Path, client=None):
        self.backend = backend
        self._modules_dir = Path(modules_dir)
        self._client = client

    def store(self, module: str) -> BaseFileStore:
        """:returns: the file store of ``module``. :raises ValueError: not a module name."""
        database = self._client[module_db_name(module)] if self.backend == "gridfs" else None
        return open_file_store(self.backend, module, b"", root=self._modules_dir / module / "fs",
                               database=database)

    def modules(self) -> list[str]:
        """:returns: the modules that may hold files (their folder, or their database, exists)."""
        if self.backend == "gridfs":
            names = (n[len(_DB_PREFIX):] for n in self._client.list_database_names() if n.startswith(_DB_PREFIX))
        else:
            names = (entry.name for entry in os.scandir(self._modules_dir) if entry.is_dir()) \
                if self._modules_dir.is_dir() else ()
        return sorted(names)


def _setting(config, key: str, default):
    try:
        return config[key]
    except KeyError:  # a web context from before the setting existed
        return default


class WebFiles:
    """The file stores a web worker serves from.

    The store client is the web context's ``store_client()`` when it has one, else one
    of its own per worker process, connected to :meth:`store_url`.

    :param web: the worker's :class:`~hostd.web.WebContext` (its ``config`` and
        ``module_fs_root(module)``; ``store_client()`` or ``store_url`` when it has them).
    """

    def __init__(self, web):
        self._web = web
        self._lock = threading.Lock()
        self._client = None
        self._pid = None

    def store(self, module: str) -> BaseFileStore:
        """:returns: the file store of ``module``. :raises ValueError: not a module name."""
        backend = _setting(self._web.config, "storage.fs", "local")
        database = self._database(module) if backend == "gridfs" else None
        return open_file_store(backend, module, b"", root=self._web.module_fs_root(module), database=database)

    def _database(self, module: str):
        name = module_db_name(module)
        if hasattr(self._web, "store_client"):
            return self._web.store_client()[name]
        with self._lock:
            if self._pid != os.getpid():  # a client must not cross a fork
                self._client, self._pid = connect(self.store_url()), os.getpid()
            return self._client[name]

    def store_url(self) -> str:
        """:returns: the store's URL: the web context's, else the configured or embedded store's."""
        url = getattr(self._web, "store_url", None)
        if url:
            return url
        config = self._web.config
        return config["storage.mongo_url"] or store_url_path(config["storage.data_dir"]).read_text().strip()

    def close(self) -> None:
        """Close this process's store client, if any."""
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                self._client.close()
            self._client = self._pid = None
