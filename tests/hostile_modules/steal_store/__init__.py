"""Hostile: tries to reach the store (and hostd) around its injected ``db``: its URL, TCP. Not a module to deploy."""
import socket

import pymongo

from sandbox import query


def _outcome(action):
    try:
        return f"ok: {action()!r}"[:200]
    except Exception as err:  # the test wants the exact failure
        return type(err).__name__


@query()
def steal_store_status():
    return "hostile"


@query()
def steal(url: str, store_ports: list[int], http_port: int):
    """Read another module's database through the store's own URL (its unix socket, or
    host:port), and open TCP connections to the given store ports and hostd's HTTP port.

    :returns: ``{attempt: "ok: ..." or the exception's type name}``.
    """
    def read_other_database():
        client = pymongo.MongoClient(url, serverSelectionTimeoutMS=500, connectTimeoutMS=500,
                                     socketTimeoutMS=500)
        try:
            return client["mod_good_a"]["secrets"].find_one({"_id": "secret"})
        finally:
            client.close()

    def connect(port):
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return "connected"
    attempts = {"pymongo mod_good_a": _outcome(read_other_database),
                "tcp hostd http": _outcome(lambda: connect(http_port))}
    for port in store_ports:
        attempts[f"tcp store {port}"] = _outcome(lambda: connect(port))
    return attempts


@query()
def steal_own(db):
    """The control: the injected ``db`` still works. :returns: what it read back."""
    db["mine"].replace_one({"_id": "x"}, {"_id": "x", "value": "my own data"}, upsert=True)
    return db["mine"].find_one({"_id": "x"})["value"]
