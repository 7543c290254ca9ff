"""Hostile: a query leaving daemonised sleepers behind (double fork + setsid). Not a module to deploy."""
import os
import time

from sandbox import query


@query()
def escapee_status():
    return "hostile"


@query()
def escape(n: int = 3):
    """Start ``n`` sleepers that are no longer this process's children. :returns: their pids."""
    pids = []
    for _ in range(n):
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:
            try:
                os.close(read_end)
                os.setsid()
                grandchild = os.fork()
                if grandchild == 0:
                    os.close(write_end)
                    time.sleep(600)
                else:
                    os.write(write_end, str(grandchild).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as handle:
            pids.append(int(handle.read()))
        os.waitpid(child, 0)
    return pids
