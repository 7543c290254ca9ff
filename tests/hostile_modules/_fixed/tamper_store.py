"""tamper_store, fixed: minds its own business."""
from sandbox import query


@query()
def tamper_store_status():
    return "fixed"
