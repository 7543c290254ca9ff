"""The host's own storage: the store it uses, and the collections it keeps there."""
from __future__ import annotations

import logging

from sandbox.cache import COLLECTION, CacheStore

from . import store as storemod
from .deadletters import DeadLetters
from .eventlog import Cursors, EventLog

__all__ = ["HostStorage"]

log = logging.getLogger("insights.storage")


class HostStorage:
    """The embedded store (or a given MongoDB), its client, and hostd's collections.

    :param config: the host's config (``storage.*``).
    :param data_dir: where an embedded store keeps its files.
    """

    def __init__(self, config, data_dir):
        self._config = config
        self._data_dir = data_dir
        self._embedded: storemod.EmbeddedStore | None = None
        #: the store's ``mongodb://`` URL
        self.url: str | None = None
        self.client = None
        self.eventlog: EventLog | None = None
        self.cursors: Cursors | None = None
        self.dead_letters: DeadLetters | None = None
        #: hostd's state database (cursors, dead letters, cron leases)
        self.state_db = None

    def open(self) -> None:
        """Start the embedded store unless a URL is configured, connect, prepare the collections."""
        url = self._config["storage.mongo_url"]
        if not url:
            self._embedded = storemod.EmbeddedStore(self._data_dir)
            url = self._embedded.start()
        self.url = url
        self.client = storemod.connect(url)
        # Cursors, dead letters and the seq counter live apart from the journaled log: the
        # embedded store keeps its sync setting per database, and a lost cursor update only
        # means a re-delivery.
        state = self.state_db = self.client[storemod.HOST_DB_NAME + "_state"]
        self.eventlog = EventLog(self.client[storemod.HOST_DB_NAME], state,
                                 journal=self._config["storage.journal"])
        self.eventlog.ensure_indexes()
        self.cursors = Cursors(state)
        self.dead_letters = DeadLetters(state)
        self.dead_letters.resume()

    def release_leases(self, module: str, owner_prefix: str) -> None:
        """End the memoize leases in ``module``'s cache that a dead sandbox held, so that other
        processes computing the same results take over at once instead of waiting for them to lapse."""
        if self.client is None:
            return
        try:
            store = CacheStore(self.client[storemod.module_db_name(module)][COLLECTION])
            released = store.release_leases_of(owner_prefix)
        except Exception as err:  # the store is down: the leases lapse on their own
            log.warning("could not release the leases of a dead sandbox of %s: %s", module, err)
            return
        if released:
            log.info("released %d memoize lease(s) held by a dead sandbox of %s", released, module)

    def close(self) -> None:
        """Close the client and stop the embedded store. Idempotent."""
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None
