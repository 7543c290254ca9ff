"""Client tests, server A: a query other modules call."""
from sandbox import query


@query()
def roster(course: str):
    """The students of a course."""
    return [f"{course}-student-{i}" for i in range(4)]
