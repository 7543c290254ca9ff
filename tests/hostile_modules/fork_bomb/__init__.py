"""Hostile: a query forking sleeping children until it cannot. Not a module to deploy."""
import os
import time

from sandbox import query


@query()
def fork_bomb_status():
    return "hostile"


@query()
def fork_bomb(limit: int = 100000):
    """Fork children that sleep, until fork fails. :returns: their pids and the error."""
    pids = []
    error = None
    while len(pids) < limit:
        try:
            pid = os.fork()
        except OSError as err:
            error = f"{type(err).__name__}: {err}"
            break
        if pid == 0:  # the child: no cleanup of the parent's sockets, just sleep
            try:
                time.sleep(600)
            finally:
                os._exit(0)
        pids.append(pid)
    return {"pids": pids, "error": error}
