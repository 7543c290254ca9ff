"""spin_import, fixed."""
from sandbox import query


@query()
def spin_import_status():
    return "fixed"
