"""A view slower than its module's call limit: hostd answers 504 for it."""
import time

from sandbox import view


@view()
def slow_view():
    """Sleep past ``call_timeout_s`` (hostd then answers 504 and restarts the sandbox)."""
    time.sleep(120)
    return "<html>too late</html>"
