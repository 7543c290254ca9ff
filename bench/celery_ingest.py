"""The Celery side of bench/ingest.py, part (b): one task per event.

Started by bench/ingest.py as ``celery -A celery_ingest worker`` (cwd ``bench/``);
the broker / result backend URL and the store URL come from the environment
(``INSIGHTS_BENCH_REDIS_URL``, ``INSIGHTS_BENCH_STORE_URL``). The task does the
per-event share of what the queued handlers do: one ``$inc`` upsert of the
event's user counter in the embedded store.
"""
from __future__ import annotations

import os

import pymongo
from celery import Celery

__all__ = ["app", "count_event"]

_REDIS_URL = os.environ.get("INSIGHTS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("celery_ingest", broker=_REDIS_URL, backend=_REDIS_URL)
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)

_client: tuple[int, pymongo.MongoClient] | None = None


def _store() -> pymongo.MongoClient:
    """:returns: this process's client (opened on first use, after the prefork)."""
    global _client
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), pymongo.MongoClient(os.environ["INSIGHTS_BENCH_STORE_URL"]))
    return _client[1]


@app.task(name="celery_ingest.count_event")
def count_event(event: dict, db_name: str) -> None:
    """``$inc`` the counter of the event's user (``u|<name>``) in ``<db_name>.counts``."""
    _store()[db_name]["counts"].update_one({"_id": f"u|{event.get('username')}"},
                                           {"$inc": {"count": 1}}, upsert=True)
