"""The two queries bench/memoize.py compares: a trivial one and a memoized heavy one."""
import numpy

from sandbox import memoize_query, query


@query()
def trivial():
    """A constant answer: the cost of the path alone."""
    return {"ok": True, "n": 1}


@query()
@memoize_query(cache_time=3600, timeout=60)
def heavy(size: int = 2000):
    """Slow to compute (a ``size`` x ``size`` matrix product), small to answer: served from the cache."""
    rng = numpy.random.default_rng(size)
    matrix = rng.random((size, size))
    product = matrix @ matrix
    return {"ok": True, "trace": float(numpy.trace(product)), "row_sums": product.sum(axis=1)[:8]}
