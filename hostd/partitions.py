"""Partitioned handlers: one handler run as N consumers, each with its own cursor and lease.

A handler declared ``@event_handler(per_user=True)`` (or ``per_resource=True``)
is fed by ``N`` consumers named ``<handler>#0`` .. ``<handler>#N-1`` (``N``: its
``partitions=`` option, else the ``cluster.partitions`` setting). Each reads the
whole log but keeps only the events whose key hashes to it (CRC-32 of the key,
modulo ``N``: the same on every node and across restarts), so all the events of
one user (or resource) reach one consumer, in log order. Each consumer has its
own cursor and lease, so the partitions of a handler spread over the nodes that
run its module. Events without the key go to partition 0.

The keys, first found wins (an empty string counts as missing):

* user: edX ``username``, edX ``context.user_id``, xAPI ``actor.account.name``,
  xAPI ``actor.mbox``;
* resource: xAPI ``object.id``, edX ``context.course_id``, edX ``event.id``.
"""
from __future__ import annotations

import zlib

__all__ = ["PartitionRoute", "Partitioner", "partition_key", "partition_of", "KEY_PATHS"]

#: where each kind of partition finds its key in an event, in order
KEY_PATHS = {
    "user": (("username",), ("context", "user_id"), ("actor", "account", "name"), ("actor", "mbox")),
    "resource": (("object", "id"), ("context", "course_id"), ("event", "id")),
}


def partition_key(event: dict, by: str) -> str | None:
    """:returns: the event's user or resource key (``by``: ``"user"`` or ``"resource"``), or None."""
    for path in KEY_PATHS[by]:
        value = event
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None and value != "" and not isinstance(value, (dict, list)):
            return str(value)
    return None


def partition_of(event: dict, by: str, count: int) -> int:
    """:returns: the partition ``0 .. count-1`` of an event (0 when it has no key)."""
    key = partition_key(event, by)
    return 0 if key is None else zlib.crc32(key.encode("utf-8")) % count


class PartitionRoute:
    """One partition of a handler, looking like a :class:`~hostd.handlers.HandlerRoute` to delivery.

    :param route: the handler's route.
    :param by: ``"user"`` or ``"resource"``.
    :param index: this partition.
    :param count: how many partitions.
    """

    __slots__ = ("route", "module", "name", "endpoint", "options", "mode", "matches", "partition")

    def __init__(self, route, by: str, index: int, count: int):
        self.route = route
        self.module, self.endpoint, self.options, self.mode = route.module, route.name, route.options, route.mode
        self.name = f"{route.name}#{index}"
        self.partition = index
        matches = route.matches
        self.matches = lambda doc: partition_of(doc["event"], by, count) == index and matches(doc)

    @property
    def key(self) -> tuple[str, str]:
        """``(module, consumer name)``."""
        return self.module, self.name


class Partitioner:
    """Turns handler routes into the consumers that feed them.

    :param default_count: partitions of a handler that does not say (``cluster.partitions``).
    """

    def __init__(self, default_count: int):
        self.default_count = default_count
        self._made: dict = {}   # (module, handler) -> (route, its partitions)

    def count(self, options: dict) -> int:
        """:returns: how many partitions a handler with these options has (0: not partitioned)."""
        if not (options.get("per_user") or options.get("per_resource")):
            return 0
        return int(options.get("partitions") or self.default_count)

    def consumers(self, routes) -> list:
        """:returns: each route itself, or its partitions (the same objects while the route lasts)."""
        out = []
        for route in routes:
            count = self.count(route.options)
            if not count:
                out.append(route)
                continue
            made = self._made.get(route.key)
            if made is None or made[0] is not route:
                by = "user" if route.options.get("per_user") else "resource"
                made = self._made[route.key] = (route, [PartitionRoute(route, by, k, count) for k in range(count)])
            out.extend(made[1])
        return out
