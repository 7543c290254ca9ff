"""Federation tests, node B: a query with an alias, a view, a course parameter to fix."""
from sandbox import query, view


@query(name=["beta_double", "beta_twice"])
def beta_double(x: int):
    """Twice ``x``.

    :param x: a number.
    """
    return 2 * x


@view()
def beta_page(who: str):
    """A page greeting ``who``."""
    return f"<html><body>Hello {who} from beta</body></html>"


@query()
def shared_name():
    """Node A has a query of this name too."""
    return "b"


@query()
def course_of(course: str = "none"):
    """The course it was called with."""
    return course
