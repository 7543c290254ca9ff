"""Client tests, server A: typed queries, a view, and a query reporting on its ``query`` proxy."""
import inspect

from sandbox import query, view
from sandbox.endpoints import NotFound


@query(name=["grades", "course_grades"])
def grades(course: str, limit: int = 3):
    """Grades of a course.

    :param course: the course id.
    :param limit: how many grades.
    """
    return [{"course": course, "grade": 10 * i} for i in range(min(limit, 100))]


@query()
def typed(i: int, f: float, b: bool, tags: list[str], s: str = "d"):
    """:returns: the converted request parameters."""
    return {"i": i, "f": f, "b": b, "tags": tags, "s": s}


@view()
def hello_user(user: str):
    """Greets a user."""
    return f"<html>Hello {user} from A</html>"


@query()
def class_size(query, course: str):
    """Asks module ``roster`` through the injected proxy. :returns: its roster's length."""
    return len(query.roster(course=course))


@query()
def proxy_report(query, view):
    """:returns: what the injected proxies show and raise, for the client tests."""
    report = {"dir_query": dir(query), "dir_view": dir(view),
              "own_signature": str(inspect.signature(query.grades))}
    for label, call in (("missing", lambda: query.no_such_query()),
                        ("bad_param", lambda: query.roster(wrong=1)),
                        ("own_bad_param", lambda: query.grades(wrong=1))):
        try:
            call()
            report[label] = None
        except Exception as err:
            report[label] = {"type": type(err).__name__, "not_found": isinstance(err, NotFound),
                             "attribute_error": isinstance(err, AttributeError),
                             "param": getattr(err, "param", None), "message": str(err)}
    return report
