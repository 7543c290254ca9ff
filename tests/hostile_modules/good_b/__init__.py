"""Well-behaved neighbour of the hostile modules: a query computing with numpy. Not a module to deploy."""
import numpy

from sandbox import query


@query()
def good_b_sum(n: int):
    """:returns: ``0 + 1 + ... + (n - 1)``, computed by numpy."""
    return int(numpy.arange(n, dtype=numpy.int64).sum())
