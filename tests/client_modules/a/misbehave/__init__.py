"""Client tests, server A: endpoints that are slow, raise or die (call timeout 1 s, module.toml)."""
import os
import time

from sandbox import query


@query()
def slow(seconds: float):
    """Sleep. :returns: the seconds slept."""
    time.sleep(seconds)
    return seconds


@query()
def boom():
    """Always raises."""
    raise ValueError("secret-detail")


@query()
def die():
    """Kill this module's own sandbox process."""
    os._exit(1)
