"""Provides the ``spy`` data layer; serves one query."""
from sandbox import query


@query()
def spy_alive():
    """Always 'spy'."""
    return "spy"
