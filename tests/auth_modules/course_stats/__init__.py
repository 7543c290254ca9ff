"""Auth tests: endpoints taking a course, one with an alias, and a name an instructor is denied."""
from sandbox import query, view


@query(name=["course_count", "course_total"])
def course_count(course: str, limit: int = 10):
    """What the module was called with.

    :param course: the course id.
    :param limit: how many.
    """
    return {"course": course, "limit": limit}


@query()
def secret_report():
    """Something only the admin may read."""
    return {"secret": True}


@view()
def course_page(course: str):
    """A page about one course."""
    return f"<html><body>Course {course}</body></html>"
