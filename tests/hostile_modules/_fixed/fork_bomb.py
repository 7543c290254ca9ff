"""fork_bomb, fixed."""
from sandbox import query


@query()
def fork_bomb_status():
    return "fixed"


@query()
def fork_bomb(limit: int = 100000):
    return {"pids": [], "error": None}
