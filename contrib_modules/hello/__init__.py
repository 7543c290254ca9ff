"""Hello: the smallest module there is, two views greeting the world and a user.

``/view/hello_world`` shows "Hello world!"; ``/view/hello_user?user=bob`` greets
``bob``, with the name HTML-escaped so a request cannot inject markup.
"""
import html

from sandbox import view


@view()
def hello_world():
    """Greet the world."""
    return "<html>Hello world!</html>"


@view()
def hello_user(user: str):
    """Greet the user named by the ``user`` request parameter.

    :param user: the name to greet (escaped before it goes into the page).
    :returns: the HTML page.
    """
    return f"<html>Hello {html.escape(user)}</html>"
