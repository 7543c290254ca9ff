"""A module whose data layer is broken."""
from sandbox import query


@query()
def loop_layer_alive():
    """Never served."""
    return True
