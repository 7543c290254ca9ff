"""Baseline of bench/query_roundtrip.py: the same function in a plain Falcon app, in-process."""
from pathlib import Path

import falcon

from sandbox.loader import load_module

_TRIVIAL = load_module(Path(__file__).resolve().parent / "modules" / "bench_trivial").endpoint(
    "query", "trivial").func


class TrivialQuery:
    """``GET /query/trivial`` answered in the web worker itself."""

    def on_get(self, req, resp):
        resp.media = _TRIVIAL()


application = falcon.App()
application.add_route("/query/trivial", TrivialQuery())
