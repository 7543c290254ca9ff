"""tincan: the xAPI data layer, and two queries about it.

The data layer is ``properties.py`` (``evt.tincan.statement``, ``.actor``,
``.verb``... for Open edX events and xAPI statements alike); hostd and every
sandbox load it, whether or not this module runs. Running the module adds:

- ``/query/tincan_mapping``: the edX event types tincan maps, each with its
  xAPI verb and whose mapping it follows (Open edX's, or Ralph's where Open edX
  has none).
- ``/query/tincan_statements?event=<JSON>``: what tincan makes of one event,
  with this installation's settings (``[tincan]`` in ``module.toml``).
"""
import json

from sandbox import BadParameter, query

from .edx_to_xapi import mapping_table
from .properties import default_transformer, is_edx, is_xapi


@query()
def tincan_mapping():
    """:returns: ``[{"event_type", "verb", "follows"}]`` for every edX event type tincan maps."""
    return mapping_table()


@query()
def tincan_statements(event: str):
    """The xAPI statements of one event.

    :param event: the event, as JSON (an edX event in either form, or an xAPI statement).
    :returns: a list of statements ([] for an edX type that is not mapped).
    :raises BadParameter: ``event`` is not a JSON object of a known source.
    """
    try:
        raw = json.loads(event)
    except ValueError as err:
        raise BadParameter("event", f"not JSON: {err}") from err
    if not isinstance(raw, dict):
        raise BadParameter("event", "must be a JSON object")
    if is_xapi(raw):
        return [raw]
    if is_edx(raw):
        return default_transformer().statements(raw)
    raise BadParameter("event", "neither an edX event (event_type, or name and timestamp) nor an xAPI statement")
