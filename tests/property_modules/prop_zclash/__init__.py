"""Test module whose ``properties.py`` redefines ``learn.verb`` for source ``edx``,
which ``prop_layer`` already defines: it must be shown as failed, naming both.

Its name sorts after ``prop_layer`` on purpose: of two colliding modules, hostd
keeps the one whose name comes first and fails the other.
"""
from sandbox import query


@query()
def prop_zclash_ping():
    """:returns: ``"pong"`` (never served: the module fails to load)."""
    return "pong"
