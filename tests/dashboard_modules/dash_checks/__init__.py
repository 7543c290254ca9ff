"""Views the browser test of the dashboard needs: one echoing its typed parameters, one failing."""
import html
import json

from sandbox import view


@view()
def echo_params(course: str, weeks: int = 2, ratio: float = 0.5, detailed: bool = False, tags: list[str] = ()):
    """Show the parameters as the module received them (JSON, HTML-escaped)."""
    received = {"course": course, "weeks": weeks, "ratio": ratio, "detailed": detailed, "tags": list(tags)}
    return f'<html><pre id="received">{html.escape(json.dumps(received, sort_keys=True))}</pre></html>'


@view()
def always_fails():
    """Raise, so that the dashboard shows this view's error box."""
    raise ValueError("this view always fails")
