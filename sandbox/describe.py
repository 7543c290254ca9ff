"""A confined probe that imports one data layer and says what it declares.

hostd never imports a ``properties.py``: to learn which event properties
exist (for ``GET /event_properties``, for telling property paths from raw
fields in filters, and for the catalog every sandbox gets), it starts this
probe for each layer, as a sandbox confined like the module it belongs to::

    python -P -m sandbox.describe SPEC_FILE

The spec holds ``module`` (whose sandbox identity the probe has), ``layer``
(``{"origin", "file"}``) and ``confinement``. The probe confines itself first,
then imports the layer, and prints its declarations as JSON on the last line
of its standard output (``{"properties": [[namespace, name, source, doc]],
"sources": [...]}``). A layer that raises at import makes the probe print
``{"error": ...}`` and exit with status 3; one that loops is killed by hostd
after the start timeout; one that ends the process is reported by its status.
"""
from __future__ import annotations

import json
import sys
import traceback

__all__ = ["main", "RESULT_PREFIX"]

#: the line of standard output that carries the answer starts with this
RESULT_PREFIX = "insights-layer-description: "
EXIT_FAILED = 3


def _describe(layer: dict) -> dict:
    from .layers import describe_plugin
    from .properties import entry_point_plugin, module_plugin
    kind, _, name = layer["origin"].partition(" ")
    plugin = entry_point_plugin(name) if kind == "package" else module_plugin(layer["file"], name)
    return describe_plugin(plugin)


def main(argv=None) -> int:
    """Entry point: ``python -m sandbox.describe SPEC_FILE``; :returns: the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0], encoding="utf-8") as handle:
        spec = json.load(handle)
    from . import confine
    enforced = confine.apply(spec.get("confinement") or {})
    try:
        answer = {**_describe(spec["layer"]), "confinement": enforced}
        status = 0
    except BaseException as err:  # noqa: B036 - SystemExit at import is a failure to describe too
        cause = err.__cause__ if err.__cause__ is not None else err
        answer = {"error": f"{type(cause).__name__}: {cause}",
                  "traceback": "".join(traceback.format_exception(err))}
        status = EXIT_FAILED
    sys.stdout.write("\n" + RESULT_PREFIX + json.dumps(answer) + "\n")
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
