"""A view as slow as asked: past its module's call limit (8 s), hostd answers 504."""
import time

from sandbox import view


@view()
def slow_view(seconds: float):
    """Sleep ``seconds``; past ``call_timeout_s`` hostd answers 504 and restarts the sandbox."""
    time.sleep(seconds)
    return f"<html>slept {seconds:g} s</html>"
