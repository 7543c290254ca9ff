"""Probe module for the cache and ``@memoize_query`` tests.

Each memoized function counts its own computations in its database
(``computations``, one document per function and argument), so a test can
tell how many times it really ran.
"""
import time

import numpy

from sandbox import cron, memoize_query, query


def _count(db, name):
    db["computations"].find_one_and_update({"_id": name}, {"$inc": {"n": 1}}, upsert=True)


@query()
def computations(db, what: str):
    """:returns: how many times the computation ``what`` ran."""
    doc = db["computations"].find_one({"_id": what})
    return doc["n"] if doc else 0


# -- memoized ------------------------------------------------------------------

@query()
@memoize_query(cache_time=240, timeout=60)
def slow_total(db, course: str, pause: float = 0.5):
    """Counted as ``slow_total|<course>``; sleeps ``pause`` seconds. :returns: a numpy array."""
    _count(db, f"slow_total|{course}")
    time.sleep(pause)
    return numpy.arange(4) * len(course)


@query()
@memoize_query(cache_time=240, timeout=60)
def gated(db, run: str):
    """Counted as ``gated|<run>``; computes until a ``gates`` document ``run`` exists (at most 30 s)."""
    _count(db, f"gated|{run}")
    deadline = time.time() + 30
    while db["gates"].find_one({"_id": run}) is None and time.time() < deadline:
        time.sleep(0.02)
    return {"run": run}


@query()
@memoize_query(cache_time=240, timeout=60)
def failing(db, run: str):
    """Counted as ``failing|<run>``; raises."""
    _count(db, f"failing|{run}")
    raise ValueError("failing on purpose")


@cron(every=3600)
@memoize_query(cache_time=240, timeout=60)
def nightly(db):
    """Counted as ``nightly``. :returns: how many times it ran, this time included."""
    _count(db, "nightly")
    return db["computations"].find_one({"_id": "nightly"})["n"]


@query()
def cached_total(course: str, pause: float = 0.5):
    """:returns: ``slow_total``'s cached result, never computing it."""
    return slow_total.from_cache(course=course, pause=pause)


@query()
def refresh_total(course: str, pause: str = "0.5"):
    """Recompute ``slow_total`` (``pause`` as text: converted as a request's would be)."""
    return slow_total.force_memoize(course=course, pause=pause)


@query()
def forget_total(course: str):
    """Forget ``slow_total``'s result for ``course`` (default pause)."""
    slow_total.clear_cache(course=course)
    return True


@query()
def nightly_from_cache():
    """:returns: ``nightly``'s cached result."""
    return nightly.from_cache()


# -- cache ---------------------------------------------------------------------

@query()
def remember(cache, key: str, value, timeout: float = 60):
    """``cache.set(key, value, timeout)``."""
    cache.set(key, value, timeout)
    return True


@query()
def recall(cache, key: str):
    """:returns: ``{"value": cache.get(key, default="<missing>")}``."""
    return {"value": cache.get(key, default="<missing>")}


@query()
def forget(cache, key: str):
    """``cache.delete(key)``."""
    cache.delete(key)
    return True
