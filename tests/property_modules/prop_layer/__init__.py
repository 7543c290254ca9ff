"""Test data layer: its ``properties.py`` defines ``evt.learn.verb`` and ``evt.learn.actor``
for edX events and xAPI statements.

Used by ``tests/test_property_filters_e2e.py`` and ``tests/test_xapi.py``; not a
module to deploy. The module itself only has a trivial query, so it loads.
"""
from sandbox import query


@query()
def prop_layer_ping():
    """:returns: ``"pong"``."""
    return "pong"
