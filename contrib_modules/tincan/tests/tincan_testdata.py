"""Shared by tincan's tests: where the real data is, the
fixtures' settings, and tincan loaded as hostd loads it.

A plain helper module (not a conftest): test files import it by name, their
folder being on ``sys.path`` under pytest's default import mode.
"""
import importlib.util
import os
import re
import shutil
from pathlib import Path

MODULE = Path(__file__).resolve().parents[1]
ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT.parent / "shared" / "data"
ERB = DATA / "event-routing-backends"

# What event-routing-backends' own tests configure: settings.LMS_ROOT_URL, and a
# mocked get_anonymous_user_id that answers this id for every user.
LMS_ROOT_URL = "http://localhost:18000"
ANONYMOUS_ID = "32e08e30-f8ae-4ce2-94a8-c2bfe38a70cb"
FIXTURES_TOML = f"""
[tincan]
lms_root_url = "{LMS_ROOT_URL}"

[tincan.actor_names]
"*" = "{ANONYMOUS_ID}"
"""


def load_edx_to_xapi():
    """:returns: ``edx_to_xapi.py`` imported as ``properties.py`` imports it (by path)."""
    spec = importlib.util.spec_from_file_location("tincan_properties_under_test", MODULE / "properties.py")
    properties = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(properties)
    return properties.edx_to_xapi


def configured_copy(folder: Path, toml: str = FIXTURES_TOML) -> Path:
    """Copy the tincan data layer to ``folder/tincan`` with its own ``module.toml``.

    :returns: the new module folder (named ``tincan``, as the data layer's origin).
    """
    target = folder / "tincan"
    target.mkdir(parents=True)
    for source in MODULE.glob("*.py"):
        shutil.copy(source, target / source.name)
    (target / "module.toml").write_text('[module]\ndescription = "tincan, configured for a test"\n' + toml,
                                        encoding="utf-8")
    return target


DOC = ROOT / "docs" / "data_layer.md"


def stale_doc_sections(sections: dict) -> list:
    """Compare generated tables with the ``<!-- name:start -->``…``<!-- name:end -->`` sections
    of ``docs/data_layer.md``; with ``INSIGHTS_UPDATE_DOCS=1``, rewrite the stale ones.

    :param sections: ``{name: fresh text}``.
    :returns: the names of the sections that are missing or stale (after any rewrite).
    """
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    update = os.environ.get("INSIGHTS_UPDATE_DOCS") == "1"
    stale = []
    for name, fresh in sections.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n)(.*?)(\n<!-- {name}:end -->)", re.S)
        match = pattern.search(text)
        if match is not None and match.group(2) == fresh:
            continue
        if match is not None and update:
            text = pattern.sub(lambda m: m.group(1) + fresh + m.group(3), text)
            DOC.write_text(text, encoding="utf-8")
            continue
        stale.append(name)
    return stale
