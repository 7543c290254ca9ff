"""A per-module store relay on a unix socket, for sandboxes without network.

Each isolated sandbox reaches the store only through its own unix socket (in
its private ipc folder). The relay copies bytes to the real store, reading each
client message first: only ``OP_MSG`` commands on the module's own database pass,
plus the handshake and liveness commands drivers send to ``admin``; anything
else (another module's database, listing databases, legacy or compressed
opcodes) closes the connection. One asyncio loop in one thread serves all modules.
"""
from __future__ import annotations

import asyncio
import logging
import os
import struct
import threading
from pathlib import Path

import bson
from pymongo.uri_parser import parse_uri

from .store import unix_store_url

__all__ = ["StoreProxy", "unix_store_url", "allowed_command"]

log = logging.getLogger("insights.storeproxy")

OP_QUERY, OP_MSG = 2004, 2013
_ADMIN_COMMANDS = {"hello", "ismaster", "ping", "buildinfo", "endsessions", "getparameter"}
_MAX_MESSAGE = 48 * 1024 * 1024


def allowed_command(opcode: int, body: bytes, own_db: str) -> bool:
    """Whether one client message may reach the store.

    :param opcode: the wire opcode.
    :param body: the message after its 16-byte header.
    :param own_db: the module's database.
    """
    try:
        if opcode == OP_MSG:
            if body[4] != 0:  # the first section must be the command document
                return False
            length = struct.unpack_from("<i", body, 5)[0]
            command = bson.decode(body[5:5 + length])
            database = command.get("$db")
            name = next(iter(command), "").lower()
        elif opcode == OP_QUERY:  # legacy handshake only
            end = body.index(b"\x00", 4)
            collection = body[4:end].decode()
            length = struct.unpack_from("<i", body, end + 9)[0]
            command = bson.decode(body[end + 9:end + 9 + length])
            database, name = collection.split(".", 1)[0], next(iter(command), "").lower()
            if collection != "admin.$cmd":
                return False
        else:
            return False
    except (IndexError, ValueError, struct.error, bson.errors.BSONError, StopIteration):
        return False
    if database == own_db:
        return True
    return database == "admin" and name in _ADMIN_COMMANDS


class StoreProxy:
    """Unix-socket relays to the store, one per module.

    :param store_url: the real store's ``mongodb://`` URL: ``host:port`` (first host
        used) or a unix socket (the embedded store's).
    """

    def __init__(self, store_url: str):
        #: where the real store is: ``(host, port)``, or ``(socket path, None)``
        self._upstream = parse_uri(store_url)["nodelist"][0]
        self._loop = asyncio.new_event_loop()
        self._servers: dict = {}
        self._thread = threading.Thread(target=self._loop.run_forever, name="insights-storeproxy",
                                        daemon=True)
        self._thread.start()

    def open(self, module: str, db_name: str, path: str | Path, uid: int | None = None) -> str:
        """Serve module ``module`` on the unix socket ``path``. :returns: its store URL."""
        path = Path(path)
        future = asyncio.run_coroutine_threadsafe(self._open(module, db_name, path), self._loop)
        future.result(10)
        os.chmod(path, 0o600)
        if uid is not None:
            os.chown(path, uid, uid)
        return unix_store_url(path)

    async def _open(self, module, db_name, path):
        await self._close(module)
        if path.exists():
            path.unlink()

        async def serve(reader, writer):
            try:
                await self._relay(module, db_name, reader, writer)
            except asyncio.CancelledError:  # hostd is stopping: the connection just ends
                pass
        self._servers[module] = await asyncio.start_unix_server(serve, path=str(path))

    def close(self, module: str) -> None:
        """Stop serving one module (its open connections end)."""
        asyncio.run_coroutine_threadsafe(self._close(module), self._loop).result(10)

    async def _close(self, module):
        server = self._servers.pop(module, None)
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _relay(self, module, db_name, client_reader, client_writer):
        host, port = self._upstream
        try:
            if port is None:
                store_reader, store_writer = await asyncio.open_unix_connection(host)
            else:
                store_reader, store_writer = await asyncio.open_connection(host, port)
        except OSError as err:
            log.warning("store relay for %s: cannot reach the store: %s", module, err)
            client_writer.close()
            return

        async def upstream():
            while True:
                header = await client_reader.readexactly(16)
                length, _, _, opcode = struct.unpack("<iiii", header)
                if not 16 <= length <= _MAX_MESSAGE:
                    raise ConnectionError("bad message length")
                body = await client_reader.readexactly(length - 16)
                if not allowed_command(opcode, body, db_name):
                    log.warning("store relay: module %s sent a command outside its database;"
                                " connection closed", module)
                    raise ConnectionError("forbidden command")
                store_writer.write(header + body)
                await store_writer.drain()

        async def downstream():
            while True:
                data = await store_reader.read(65536)
                if not data:
                    raise ConnectionError("store closed")
                client_writer.write(data)
                await client_writer.drain()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for writer in (client_writer, store_writer):
                writer.close()

    def stop(self) -> None:
        """Close every relay and end the loop."""
        async def close_all():
            for module in list(self._servers):
                await self._close(module)
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:  # live connections
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
