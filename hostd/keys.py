"""The host's secrets: read from (or created in) private files, and derived per module."""
from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

__all__ = ["load_secret", "module_fs_key"]


def load_secret(path: Path) -> bytes:
    """:returns: the 32-byte secret in ``path``, created (mode 0600) if absent or unreadable."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(os.urandom(32).hex())
        return bytes.fromhex(path.read_text().strip())


def module_fs_key(master: bytes, module: str) -> bytes:
    """:returns: the key a module signs its file URLs with (derived, so it cannot sign for others)."""
    return hmac.new(master, f"fs|{module}".encode(), hashlib.sha256).digest()
