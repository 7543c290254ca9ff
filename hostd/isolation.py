"""What hostd prepares for sandboxes it isolates (when it runs as root).

Each module gets a uid of its own (``sandbox.uid_base`` + a stable offset), its
data and ipc folders owned by that uid (0700), a store relay on a unix socket
in its ipc folder limited to its own database, and a plan telling the sandbox
which folders to hide and which to bind back (see :mod:`sandbox.confine`).
"""
from __future__ import annotations

import logging
import os
import sys
import zlib
from pathlib import Path

from .storeproxy import StoreProxy

__all__ = ["Isolation"]

log = logging.getLogger("insights.isolation")

_UID_SPAN = 20000


def _code_paths() -> list[str]:
    """Folders holding the interpreter, the installed packages and our own packages."""
    import sandbox
    paths = {sys.base_prefix, sys.prefix, str(Path(sandbox.__file__).resolve().parents[1])}
    paths |= {p for p in sys.path if p and os.path.isabs(p) and os.path.isdir(p)}
    return sorted(str(Path(p).resolve()) for p in paths)


class Isolation:
    """Per-module uids, folders, store relays and confinement plans.

    :param paths: the host's :class:`~hostd.paths.HostPaths`.
    :param config: the host's config.
    :param store_url: the real store.
    """

    def __init__(self, paths, config, store_url: str):
        self._paths = paths
        self._config = config
        self._proxy = StoreProxy(store_url)
        self._uids: dict = {}
        self._code = _code_paths()

    @classmethod
    def for_config(cls, paths, config, store_url: str) -> "Isolation | None":
        """:returns: an :class:`Isolation` when sandboxes are isolated (hostd is root and
        ``sandbox.isolation`` is ``auto``), else None; says which in the log."""
        mode = config["sandbox.isolation"]
        if mode not in ("auto", "off"):
            raise ValueError(f"sandbox.isolation must be auto or off, not {mode!r}")
        if mode == "off" or os.geteuid() != 0:
            log.warning("isolation: off (%s): sandboxes share hostd's uid, network and files",
                        "sandbox.isolation = off" if mode == "off" else "hostd is not root")
            return None
        log.info("isolation: per-module uids from %d, no network, store through a relay limited to"
                 " each module's database, private filesystem view", config["sandbox.uid_base"])
        return cls(paths, config, store_url)

    def uid(self, module: str) -> int:
        """:returns: the module's uid (stable across restarts, distinct within this host)."""
        if module not in self._uids:
            base = self._config["sandbox.uid_base"]
            offset = zlib.crc32(module.encode()) % _UID_SPAN
            taken = set(self._uids.values())
            while base + offset in taken:
                offset = (offset + 1) % _UID_SPAN
            self._uids[module] = base + offset
        return self._uids[module]

    def prepare(self, module: str, module_dir: Path, layer_files) -> tuple[str, dict]:
        """Own the module's folders, open its store relay.

        :returns: ``(store URL for the sandbox, confinement plan fields)``.
        """
        uid = self.uid(module)
        data, ipc = self._paths.module_data(module), self._paths.module_ipc(module)
        for folder in (data, ipc):
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
            for root, dirs, files in os.walk(folder):
                for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                    os.lchown(name, uid, uid)
        store_url = self._proxy.open(module, f"mod_{module}", ipc / "store.sock", uid)
        keep = [[path, True] for path in self._code]
        keep += [[str(module_dir), True], [str(data), False], [str(ipc), False]]
        # data layers are shared code: their whole folder (a properties.py may import its siblings)
        keep += [[str(Path(f).resolve().parent), True] for f in layer_files]
        hide = [["/root", "0711"], ["/tmp", "1777"], [str(self._paths.data), "0755"]]
        hide += [[str(Path(p).resolve()), "0755"] for p in self._config["modules.paths"]]
        if str(module_dir.parent) not in {h[0] for h in hide}:
            hide.append([str(module_dir.parent), "0755"])  # modules given one by one (the harness)
        # never cover a folder holding the interpreter or our packages (e.g. a module in the repo root)
        hide = [h for h in hide if not any(c == h[0] or c.startswith(h[0] + "/") for c in self._code)
                or h[0] in ("/root", "/tmp")]
        return store_url, {"isolate": True, "uid": uid, "gid": uid, "keep": keep, "hide": hide,
                           "workdir": str(data)}

    def release(self, module: str) -> None:
        """Close the module's store relay."""
        self._proxy.close(module)

    def close(self) -> None:
        """Close every relay."""
        self._proxy.stop()
