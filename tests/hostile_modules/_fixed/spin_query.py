"""spin_query, fixed."""
from sandbox import query


@query()
def spin_query_status():
    return "fixed"


@query()
def spin():
    return "done"
