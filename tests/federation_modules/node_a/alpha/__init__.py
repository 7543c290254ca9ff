"""Federation tests, node A: its own names, one also served by node B, and calls to other nodes."""
from sandbox import query


@query()
def alpha_local():
    """A name only node A has."""
    return {"node": "a"}


@query()
def shared_name():
    """Node B has a query of this name too: node A answers it itself."""
    return "a"


@query()
def via_peer(query, x: int):
    """Calls ``beta_double``, which node B hosts, from inside this sandbox."""
    return {"doubled": query.beta_double(x=x)}


@query()
def via_gone_peer(query):
    """Calls ``gamma_hello``, which node C hosts, from inside this sandbox."""
    return query.gamma_hello()
