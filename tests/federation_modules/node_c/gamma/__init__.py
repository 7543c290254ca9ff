"""Federation tests, node C: the peer that is killed."""
from sandbox import query


@query()
def gamma_hello():
    """A name only node C has."""
    return "hello from gamma"


@query()
def shared_name():
    """Nodes A and B have a query of this name too."""
    return "c"
