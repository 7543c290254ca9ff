"""The GridFS backend of ``fs`` (``storage.fs = "gridfs"``): a module's files in its own database.

Files live in the GridFS bucket :data:`BUCKET` of the module's database, so every
hostd node on one MongoDB sees the same files. A file is one GridFS file whose
``metadata`` holds ``expires`` (a Unix time or null) and ``written`` (the Unix time
of its upload). Rewriting a file uploads a new one, then deletes the older ones of
that name: a reader meanwhile takes the newest. The bucket's collections are
``insights_fs.files`` and ``insights_fs.chunks``; the embedded store keeps them in
tables named ``insights_fs_files`` and ``insights_fs_chunks``, names a module must
not give its own collections.

Queries on the files collection keep to what the embedded store's GridFS answers
as MongoDB does: all files, equality on ``filename``, ``$lte`` on
``metadata.expires``, and ``$set`` of the whole ``metadata`` (it answers ranges
and ``$in`` on ``filename``, or regular expressions, with nothing). Folders are
therefore found by reading the file names.
"""
from __future__ import annotations

import io
import tempfile
import time

import gridfs
from pymongo.errors import OperationFailure

from .filestore import BaseFileStore

__all__ = ["GridFileStore", "BUCKET"]

#: The GridFS bucket of module files (its collections: ``insights_fs.files``, ``.chunks``).
BUCKET = "insights_fs"
#: Writes are staged in memory up to this size, then in a temporary file.
_SPOOL_BYTES = 8 * 1024 * 1024


class _GridReader(io.RawIOBase):
    """A GridFS download as a raw stream (wrapped in ``io.BufferedReader`` for the full file API)."""

    def __init__(self, grid_out):
        super().__init__()
        self._source = grid_out
        self.name = grid_out.filename
        #: the file's size in bytes
        self.length = grid_out.length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._source.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._source.seek(offset, whence)
        return self._source.tell()

    def tell(self) -> int:
        return self._source.tell()

    def close(self) -> None:
        if not self.closed:
            self._source.close()
        super().close()


def _newest_first(doc: dict):
    return ((doc.get("metadata") or {}).get("written") or 0, str(doc["_id"]))


class GridFileStore(BaseFileStore):
    """Files private to one module, in GridFS in its database.

    :param database: the module's ``pymongo`` database.
    :param module: the module's name (used in URLs).
    :param url_key: the module's key for signing URLs.
    :param limit_mb: see :class:`~sandbox.filestore.BaseFileStore`.
    """

    def __init__(self, database, module: str, url_key: bytes, limit_mb: float | None = None):
        super().__init__(module, url_key, limit_mb)
        self._bucket = gridfs.GridFSBucket(database, bucket_name=BUCKET)
        self._files = database[f"{BUCKET}.files"]

    def _versions(self, name: str | None = None) -> list[dict]:
        """:returns: the GridFS files of ``name`` (all files: None), newest first."""
        docs = self._files.find({} if name is None else {"filename": name})
        return sorted(docs, key=_newest_first, reverse=True)

    def _current(self, name: str) -> dict | None:
        versions = self._versions(name)
        return versions[0] if versions else None

    def _names(self) -> set[str]:
        return {doc["filename"] for doc in self._versions()}

    def _kind(self, name):
        if self._current(name) is not None:
            return "file"
        prefix = name + "/"
        return "dir" if any(n.startswith(prefix) for n in self._names()) else None

    def _size(self, name):
        return self._current(name)["length"]

    def _usage(self):
        return sum(doc["length"] for doc in self._versions())

    def _children(self, folder):
        prefix = folder + "/" if folder else ""
        return list({n[len(prefix):].split("/", 1)[0] for n in self._names() if n.startswith(prefix)})

    def _reader(self, name):
        doc = self._current(name)
        try:
            grid_out = self._bucket.open_download_stream(doc["_id"]) if doc else None
        except gridfs.errors.NoFile:
            grid_out = None
        if grid_out is None:  # deleted since it was checked
            raise FileNotFoundError(2, "no such file", name)
        return io.BufferedReader(_GridReader(grid_out))

    def _staging(self, name, copy):
        staging = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)
        if copy:
            self._bucket.download_to_stream(self._current(name)["_id"], staging)
        return staging

    def _publish(self, name, staging):
        older = self._versions(name)
        expires = (older[0].get("metadata") or {}).get("expires") if older else None
        staging.seek(0)
        self._bucket.upload_from_stream(name, staging, metadata={"expires": expires, "written": time.time()})
        staging.close()
        for doc in older:
            self._delete_version(doc["_id"])

    def _discard(self, staging):
        staging.close()

    def _delete_version(self, file_id) -> None:
        try:
            self._bucket.delete(file_id)
        except (gridfs.errors.NoFile, OperationFailure):
            # MongoDB says NoFile, the embedded store OperationFailure: gone either way is fine.
            if self._files.find_one({"_id": file_id}) is not None:
                raise

    def _delete(self, name):
        for doc in self._versions(name):
            self._delete_version(doc["_id"])

    def _expiry(self, name):
        doc = self._current(name)
        return (doc.get("metadata") or {}).get("expires") if doc else None

    def _set_expiry(self, name, when):
        for doc in self._versions(name):
            metadata = {**(doc.get("metadata") or {}), "expires": when}
            self._files.update_one({"_id": doc["_id"]}, {"$set": {"metadata": metadata}})

    def _expired(self, now):
        return sorted({doc["filename"] for doc in self._files.find({"metadata.expires": {"$lte": now}})})
