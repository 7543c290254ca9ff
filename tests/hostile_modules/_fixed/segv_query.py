"""segv_query, fixed."""
from sandbox import query


@query()
def segv_query_status():
    return "fixed"


@query()
def segv():
    return 0
