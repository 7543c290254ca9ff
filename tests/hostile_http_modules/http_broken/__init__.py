"""Probe of ``tests/test_hostile_http.py``: fails at import, so it is shown as failed."""
raise RuntimeError("http_broken fails at import on purpose")
