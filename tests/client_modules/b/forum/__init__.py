"""Client and OpenAPI tests, server B: well-behaved endpoints of every parameter type."""
import html

from sandbox import query, view


@query()
def posts(course: str, limit: int = 5):
    """Forum posts of a course."""
    return [{"course": course, "post": i} for i in range(max(0, min(limit, 50)))]


@query()
def echo(i: int, f: float, b: bool, tags: list[str], s: str = "d"):
    """:returns: the converted request parameters."""
    return {"i": i, "f": f, "b": b, "tags": tags, "s": s}


@query()
def no_params():
    """:returns: a constant."""
    return {"ok": True}


@view()
def hello_user(user: str):
    """Greets a user (B's own greeting: the same name as A's)."""
    return f"<html>Hello {html.escape(user)} from B</html>"


@view()
def forum_page(course: str, page: int = 1):
    """A page of a course's forum."""
    return f"<html>{html.escape(course)} page {page}</html>"
