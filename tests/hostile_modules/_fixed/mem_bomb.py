"""mem_bomb, fixed."""
from sandbox import query


@query()
def mem_bomb_status():
    return "fixed"


@query()
def mem_bomb():
    return len(b"\x01" * (20 * 1024 * 1024))
