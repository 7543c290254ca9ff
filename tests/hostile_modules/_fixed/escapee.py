"""escapee, fixed."""
from sandbox import query


@query()
def escapee_status():
    return "fixed"
