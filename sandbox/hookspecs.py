"""Every pluggy hook of Insights, in one module.

Plugins are the ``properties.py`` of each module folder (wrapped by
:func:`sandbox.properties.module_plugin`) and pip-installed packages listed in
the ``insights.properties`` entry-point group. Hooks are called in hostd (to
evaluate filters) and in every sandbox (for ``evt.<namespace>.<name>``).
"""
import pluggy

__all__ = ["hookspec", "hookimpl", "PROJECT"]

PROJECT = "insights"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- event properties ---------------------------------------------------------

@hookspec
def insights_event_properties():
    """Contribute event properties.

    Called once per process when its property registry is built (hostd at
    start-up, each sandbox before loading its module). Not ``firstresult``:
    every plugin's list is gathered.

    :returns: a list of functions decorated with ``@event_property``.
    """


@hookspec
def insights_event_sources():
    """Contribute event sources: predicates telling which system an event comes from.

    Called once per process when its property registry is built. Not ``firstresult``.

    :returns: a list of functions decorated with ``@event_source(name)``; each
        takes an ``Event`` and returns a bool.
    """
