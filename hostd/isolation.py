"""What hostd prepares for the sandboxes it isolates, as root or not.

Two modes (``sandbox.isolation``; ``auto`` picks ``root`` when hostd runs as root,
``user`` otherwise):

* ``root``: each module gets a uid of its own (``sandbox.uid_base`` + a stable
  offset) owning its data and ipc folders (0700);
* ``user``: sandboxes keep hostd's uid but each enters a user namespace of its
  own; its folders are hostd's (0700).

In both, each module gets a store relay on a unix socket in its ipc folder
limited to its own database (no event log, cursors or other modules' data), and
a plan telling the sandbox what to hide, what to bind back and what Landlock
lets it read, run and write (see :mod:`sandbox.confine`).
"""
from __future__ import annotations

import ctypes
import logging
import os
import sys
import zlib
from pathlib import Path

from sandbox import confine

from .storeproxy import StoreProxy

__all__ = ["Isolation", "MODES"]

log = logging.getLogger("insights.isolation")

#: values of ``sandbox.isolation``
MODES = ("auto", "user", "off")
_UID_SPAN = 20000
PR_SET_DUMPABLE = 4


def _project_root() -> Path:
    import sandbox
    return Path(sandbox.__file__).resolve().parents[1]


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


class _Grants:
    """What sandboxes may read and run: the interpreter, installed packages, our packages.

    A folder on ``sys.path`` that holds hostd's data or module folders, and the
    source root our packages are imported from (a checkout: its ``conf``, ``tests``
    and module folders are not code), is only listable; of the source root, only
    our packages are granted.
    """

    def __init__(self, private: list[str]):
        root = str(_project_root())
        paths = {sys.base_prefix, sys.prefix, root}
        paths |= {p for p in sys.path if p and os.path.isabs(p) and os.path.isdir(p)}
        paths = {str(Path(p).resolve()) for p in paths}
        self.list = sorted(p for p in paths if p == root or any(_under(f, p) for f in private))
        self.code = sorted(paths - set(self.list))
        self.code += [str(Path(root, package)) for package in ("sandbox", "hostd")]

    @property
    def all(self) -> list[str]:
        return sorted({*self.code, *self.list})


class Isolation:
    """Per-module folders, store relays and confinement plans (and uids as root).

    :param paths: the host's :class:`~hostd.paths.HostPaths`.
    :param config: the host's config.
    :param store_url: the real store.
    :param mode: ``"root"`` or ``"user"``.
    """

    def __init__(self, paths, config, store_url: str, mode: str = "root"):
        if mode not in ("root", "user"):
            raise ValueError(f"isolation mode must be root or user, not {mode!r}")
        self.mode = mode
        self._paths = paths
        self._config = config
        self._proxy = StoreProxy(store_url)
        self._uids: dict = {}
        private = [str(paths.data.resolve()), *(str(Path(p).resolve()) for p in config["modules.paths"])]
        self._grants = _Grants(private)

    @classmethod
    def for_config(cls, paths, config, store_url: str) -> "Isolation | None":
        """:returns: an :class:`Isolation` unless ``sandbox.isolation`` is ``off`` (then None);
        says in the log which mode, and warns about every layer this machine lacks."""
        setting = config["sandbox.isolation"]
        if setting not in MODES:
            raise ValueError(f"sandbox.isolation must be one of {', '.join(MODES)}, not {setting!r}")
        if setting == "off":
            log.warning("isolation: off (sandbox.isolation = off): sandboxes share hostd's uid, network"
                        " and files; only rlimits (and cgroups as root) apply")
            return None
        mode = "root" if setting == "auto" and os.geteuid() == 0 else "user"
        if mode == "root":
            log.info("isolation: root mode: per-module uids from %d, no network, store through a relay"
                     " limited to each module's database, private filesystem view, Landlock, seccomp",
                     config["sandbox.uid_base"])
        else:
            log.info("isolation: user mode (%s): sandboxes keep hostd's uid in user namespaces of their own;"
                     " no network, store through a relay limited to each module's database, private"
                     " filesystem view, Landlock, seccomp%s",
                     *(("hostd is not root", "; no cgroups") if os.geteuid() != 0 else
                       ("sandbox.isolation = user", "")))
            _protect_host()
        for layer, state in confine.probe(mode).items():
            if not state.startswith("available"):
                log.warning("isolation: sandboxes run without %s: %s", layer, state)
        return cls(paths, config, store_url, mode)

    def uid(self, module: str) -> int:
        """:returns: the module's uid (stable across restarts, distinct within this host);
        hostd's own uid in user mode."""
        if self.mode == "user":
            return os.getuid()
        if module not in self._uids:
            base = self._config["sandbox.uid_base"]
            offset = zlib.crc32(module.encode()) % _UID_SPAN
            taken = set(self._uids.values())
            while base + offset in taken:
                offset = (offset + 1) % _UID_SPAN
            self._uids[module] = base + offset
        return self._uids[module]

    def prepare(self, module: str, module_dir: Path, layer_files) -> tuple[str, dict]:
        """Make the module's folders private to it, open its store relay.

        :param layer_files: the ``properties.py`` of the data layers it may import.

        :returns: ``(store URL for the sandbox, confinement plan fields)``; the plan has
            ``uid`` only in root mode.
        """
        uid = self.uid(module) if self.mode == "root" else None
        data, ipc = self._paths.module_data(module), self._paths.module_ipc(module)
        for folder in (data, ipc):
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
            if uid is not None:
                for root, dirs, files in os.walk(folder):
                    for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                        os.lchown(name, uid, uid)
        store_url = self._proxy.open(module, f"mod_{module}", ipc / "store.sock", uid)
        # data layers are shared code: their whole folder (a properties.py may import its siblings)
        read = [str(module_dir), *sorted({str(Path(f).resolve().parent) for f in layer_files})]
        plan = {"isolate": self.mode, "code": self._grants.code, "list": self._grants.list, "read": read,
                "write": [str(data), str(ipc)], "hide": self._hide(module_dir), "workdir": str(data),
                "landlock": True, "seccomp": True}
        if uid is not None:
            plan.update(uid=uid, gid=uid)
        return store_url, plan

    def _hide(self, module_dir: Path) -> list:
        """``[[folder, tmpfs mode]]`` covered in the sandbox's view, what it needs bound back."""
        code = self._grants.all
        homes = ["/root"] + ([str(Path.home())] if self.mode == "user" else [])
        hide = [[home, "0711"] for home in homes if home != "/" and os.access(home, os.R_OK | os.X_OK)]
        hide += [["/tmp", "1777"], [str(self._paths.data.resolve()), "0755"]]
        hide += [[str(Path(p).resolve()), "0755"] for p in self._config["modules.paths"]]
        if str(module_dir.parent) not in {h[0] for h in hide}:
            hide.append([str(module_dir.parent), "0755"])  # modules given one by one (the harness)
        # never cover a folder holding the interpreter or our packages (e.g. a module in the repo root),
        # except the homes and /tmp, whose covers bind the code back
        exempt = {*homes, "/tmp"}
        unique = {}
        for folder, mode in hide:
            if folder in exempt or not any(_under(c, folder) for c in code):
                unique.setdefault(folder, mode)
        return [[folder, mode] for folder, mode in unique.items()]

    def release(self, module: str) -> None:
        """Close the module's store relay."""
        self._proxy.close(module)

    def close(self) -> None:
        """Close every relay."""
        self._proxy.stop()


def _protect_host() -> None:
    """Sandboxes share hostd's uid in user mode: make hostd's ``/proc`` entries (environ, memory)
    root's and refuse ptrace, even where Landlock is missing."""
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        log.warning("isolation: cannot make hostd undumpable: %s", os.strerror(ctypes.get_errno()))
