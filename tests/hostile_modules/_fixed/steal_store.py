"""steal_store, fixed: minds its own business."""
from sandbox import query


@query()
def steal_store_status():
    return "fixed"
