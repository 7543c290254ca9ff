"""Hostile: a query that never returns (a busy loop deaf to SIGTERM). Not a module to deploy."""
from sandbox import query


@query()
def spin_query_status():
    return "hostile"


@query()
def spin():
    """Loop forever."""
    while True:
        pass
