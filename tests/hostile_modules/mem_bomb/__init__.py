"""Hostile: a query allocating (and touching) 20 MB blocks forever. Not a module to deploy."""
from sandbox import query

_hoard = []


@query()
def mem_bomb_status():
    return "hostile"


@query()
def mem_bomb():
    """Allocate until something stops us."""
    while True:
        _hoard.append(b"\x01" * (20 * 1024 * 1024))
