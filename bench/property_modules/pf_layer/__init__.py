"""Bench data layer for ``bench/property_filter.py``: its ``properties.py`` defines
``evt.bench.verb`` from the raw ``event_type``. The module itself only has a trivial
query, so it loads; not a module to deploy."""
from sandbox import query


@query()
def pf_layer_ping():
    """:returns: ``"pong"``."""
    return "pong"
