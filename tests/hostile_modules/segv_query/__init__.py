"""Hostile: a query that makes its process segfault. Not a module to deploy."""
import ctypes

from sandbox import query


@query()
def segv_query_status():
    return "hostile"


@query()
def segv():
    """Read address 0."""
    return len(ctypes.string_at(0))
