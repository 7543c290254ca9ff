"""The trivial query both sides of bench/query_roundtrip.py serve."""
from sandbox import query


@query()
def trivial():
    """A constant answer: what is measured is the path, not the work."""
    return {"ok": True, "n": 1}
