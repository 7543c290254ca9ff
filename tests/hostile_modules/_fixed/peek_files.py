"""peek_files, fixed: minds its own business."""
from sandbox import query


@query()
def peek_files_status():
    return "fixed"
