"""spy_hostd, fixed: minds its own business."""
from sandbox import query


@query()
def spy_hostd_status():
    return "fixed"
