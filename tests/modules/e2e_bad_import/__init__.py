"""A module whose import fails: hostd must show it as failed, with the traceback."""
from sandbox import query

raise RuntimeError("import-failure-marker")


@query()
def never_defined():
    return None
