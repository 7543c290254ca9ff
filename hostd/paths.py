"""Where a host keeps its files under its data dir."""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HostPaths"]

_MAX_IPC_DIR = 60  # + "/<module name up to 32>/upcall.sock" stays under the 107-byte socket limit


@dataclass(frozen=True)
class HostPaths:
    """Where a host keeps its files under the data dir."""

    data: Path

    @property
    def run(self) -> Path:
        """Private (0700) folder: module table, runtime file, sandbox specs."""
        return self.data / "run"

    @property
    def ipc(self) -> Path:
        """Private (0700) folder of the ipc:// sockets.

        Unix socket paths are limited to 107 bytes: under a deep data dir the
        folder moves to a short per-data-dir path in the temporary folder.
        """
        inside = self.data / "ipc"
        if len(str(inside)) <= _MAX_IPC_DIR:
            return inside
        digest = hashlib.sha256(str(self.data.resolve()).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"insights-ipc-{digest}"

    @property
    def logs(self) -> Path:
        """One log file per sandbox."""
        return self.data / "logs"

    def module_data(self, module: str) -> Path:
        """A module's own folder (its ``fs`` lives in ``fs/`` there)."""
        return self.data / "modules" / module

    def module_ipc(self, module: str) -> Path:
        """A module's private (0700) folder of sockets: call, upcall and store."""
        return self.ipc / module

    @property
    def ingest_endpoint(self) -> str:
        """The ingest thread's socket (appends from web workers and the broker)."""
        return f"ipc://{self.ipc / 'ingest.sock'}"

    @property
    def control_endpoint(self) -> str:
        """The broker's control socket (web workers' requests to the host)."""
        return f"ipc://{self.ipc / 'control.sock'}"

    @property
    def table_file(self) -> Path:
        """The published module table."""
        return self.run / "modules.json"

    @property
    def runtime_file(self) -> Path:
        """What web workers need to reach the host (0600)."""
        return self.run / "runtime.json"

    def make(self) -> None:
        """Create the folders with private modes."""
        self.data.mkdir(parents=True, exist_ok=True)
        for folder in (self.run, self.ipc):
            folder.mkdir(mode=0o700, exist_ok=True)
            os.chmod(folder, 0o700)
        self.logs.mkdir(exist_ok=True)
