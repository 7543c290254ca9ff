"""A module that cannot load: the dashboard shows its traceback's last line, and the rest on a click."""
raise RuntimeError("dash_broken cannot load <on purpose>")
