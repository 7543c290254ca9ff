"""Loading module folders (:mod:`sandbox.loader`)."""
from __future__ import annotations

import textwrap

import pytest

from sandbox.errors import ModuleLoadError
from sandbox.loader import check_module_name, load_module, read_manifest

pytestmark = pytest.mark.timeout(60)


def write_module(parent, name, source, manifest=None, files=None):
    """Write ``parent/name/__init__.py`` (and ``module.toml``, other files); :returns: the folder."""
    folder = parent / name
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(textwrap.dedent(source), encoding="utf-8")
    if manifest is not None:
        (folder / "module.toml").write_text(textwrap.dedent(manifest), encoding="utf-8")
    for file_name, text in (files or {}).items():
        (folder / file_name).write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


ALIASES = """
    from sandbox import query, view

    @query(name=["a", "b", "c.d"])
    def multi(x: int = 1):
        return x * 2

    @view()
    def page(user: str):
        return f"<p>{user}</p>"
"""


def test_aliases_resolve_to_the_same_endpoint(tmp_path):
    loaded = load_module(write_module(tmp_path, "aliases", ALIASES))
    main = loaded.endpoint("query", "a")
    assert main is not None and main.name == "a"
    assert loaded.endpoint("query", "b") is main
    assert loaded.endpoint("query", "c.d") is main
    assert main.func(x=4) == 8
    assert loaded.endpoint("query", "multi") is None
    assert loaded.endpoint("view", "a") is None
    assert loaded.endpoint("view", "page").func(user="x") == "<p>x</p>"


def test_describe_lists_each_endpoint_once_with_aliases(tmp_path):
    loaded = load_module(write_module(tmp_path, "aliases", ALIASES))
    entries = {e["name"]: e for e in loaded.describe()}
    assert set(entries) == {"a", "page"}
    assert entries["a"]["aliases"] == ["b", "c.d"]
    assert entries["page"]["aliases"] == []


def test_a_view_and_a_query_may_share_a_name(tmp_path):
    loaded = load_module(write_module(tmp_path, "shared", """
        from sandbox import query, view

        @view(name="stats")
        def stats_page():
            return "<b>stats</b>"

        @query(name="stats")
        def stats_data():
            return {"n": 1}
    """))
    assert loaded.endpoint("view", "stats").func() == "<b>stats</b>"
    assert loaded.endpoint("query", "stats").func() == {"n": 1}
    assert sorted(e["class"] for e in loaded.describe()) == ["query", "view"]


def test_two_queries_with_one_name_fail_naming_both(tmp_path):
    folder = write_module(tmp_path, "clash", """
        from sandbox import query

        @query(name="total")
        def first_total():
            return 1

        @query(name=["sum", "total"])
        def second_total():
            return 2
    """)
    with pytest.raises(ModuleLoadError) as info:
        load_module(folder)
    message = str(info.value)
    assert "first_total" in message and "second_total" in message
    assert "'total'" in message


def test_a_function_decorated_twice_registers_both_kinds(tmp_path):
    loaded = load_module(write_module(tmp_path, "twice", """
        from sandbox import query, view

        @view(name="both")
        @query(name="both")
        def both():
            return "<i>x</i>"
    """))
    assert loaded.endpoint("view", "both").func is loaded.endpoint("query", "both").func


@pytest.mark.parametrize("name", ["Bad", "1abc", "with-dash", "_private", "caps_X"])
def test_invalid_module_folder_name(tmp_path, name):
    folder = write_module(tmp_path, name, "x = 1\n")
    with pytest.raises(ModuleLoadError, match="must match"):
        load_module(folder)
    with pytest.raises(ModuleLoadError):
        check_module_name(name)


def test_folder_without_init_is_a_load_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModuleLoadError, match="__init__.py"):
        load_module(tmp_path / "empty")


def test_invalid_endpoint_name_is_a_load_error(tmp_path):
    folder = write_module(tmp_path, "badname", """
        from sandbox import query

        @query(name="has space")
        def q():
            return 1
    """)
    with pytest.raises(ModuleLoadError, match="has space"):
        load_module(folder)


def test_bad_signature_is_a_load_error_naming_module_function_and_parameter(tmp_path):
    folder = write_module(tmp_path, "badsig", """
        from sandbox import view

        @view()
        def page(events):
            return ""
    """)
    with pytest.raises(ModuleLoadError) as info:
        load_module(folder)
    assert "badsig.page" in str(info.value) and "'events'" in str(info.value)


def test_import_errors_of_the_module_propagate(tmp_path):
    folder = write_module(tmp_path, "boom", "raise RuntimeError('import-marker')\n")
    with pytest.raises(RuntimeError, match="import-marker"):
        load_module(folder)


def test_manifest_is_read(tmp_path):
    folder = write_module(tmp_path, "withtoml", ALIASES, manifest="""
        [module]
        description = "Counts events per user"
        version = "0.1.0"

        [limits]
        call_timeout_s = 5
    """)
    loaded = load_module(folder)
    assert loaded.manifest == {"module": {"description": "Counts events per user", "version": "0.1.0"},
                               "limits": {"call_timeout_s": 5}}
    assert read_manifest(folder) == loaded.manifest


def test_missing_manifest_gives_empty_tables(tmp_path):
    loaded = load_module(write_module(tmp_path, "notoml", ALIASES))
    assert loaded.manifest == {"module": {}, "limits": {}}


def test_invalid_manifest_is_a_load_error(tmp_path):
    folder = write_module(tmp_path, "badtoml", ALIASES, manifest="[module\nx = \n")
    with pytest.raises(ModuleLoadError, match="module.toml"):
        load_module(folder)


def test_describe_entries(tmp_path):
    loaded = load_module(write_module(tmp_path, "described", """
        from sandbox import event_handler, query, view

        @view(description="A page about a user")
        def user_page(db, user: str, limit: int = 5):
            '''Not used: the description wins.'''
            return ""

        @query(name=["grades", "course_grades"])
        def grades(course: str, params):
            '''Grades of a course.

            More text.
            '''
            return []

        @query()
        def undocumented():
            return 1

        @event_handler(filter={"event_type": "play_video"}, mode="realtime")
        def count(events, db):
            pass
    """))
    entries = {(e["class"], e["name"]): e for e in loaded.describe()}
    assert set(entries) == {("view", "user_page"), ("query", "grades"), ("query", "undocumented"),
                            ("handler", "count")}
    for entry in entries.values():
        assert {"class", "name", "aliases", "module", "params", "category", "doc"} <= set(entry)
        assert entry["module"] == "described"

    page = entries[("view", "user_page")]
    assert page["doc"] == "A page about a user"
    assert page["aliases"] == []
    assert page["category"] == "user+limit"
    assert page["params"] == [
        {"name": "user", "type": "str", "required": True, "default": None},
        {"name": "limit", "type": "int", "required": False, "default": 5},
    ]

    grades = entries[("query", "grades")]
    assert grades["aliases"] == ["course_grades"]
    assert grades["doc"].startswith("Grades of a course.")
    assert "More text." in grades["doc"]
    assert grades["category"] == "course"

    assert entries[("query", "undocumented")]["doc"] == ""
    assert entries[("query", "undocumented")]["params"] == []

    handler = entries[("handler", "count")]
    assert handler["options"]["filter"] == {"event_type": "play_video"}
    assert handler["options"]["mode"] == "realtime"


def test_functions_without_decorators_are_not_endpoints(tmp_path):
    loaded = load_module(write_module(tmp_path, "plain", """
        from sandbox import query

        def helper():
            return 1

        @query()
        def only():
            return helper()
    """))
    assert [e["name"] for e in loaded.describe()] == ["only"]


def test_submodules_of_the_module_can_be_imported(tmp_path):
    loaded = load_module(write_module(tmp_path, "withsub", """
        from sandbox import query
        from .helpers import VALUE

        @query()
        def value():
            return VALUE
    """, files={"helpers.py": "VALUE = 'from helpers'\n"}))
    assert loaded.endpoint("query", "value").func() == "from helpers"


def test_loading_twice_gives_independent_results(tmp_path):
    folder = write_module(tmp_path, "counter", """
        from sandbox import query

        STATE = []

        @query()
        def push(x: int = 0):
            STATE.append(x)
            return len(STATE)
    """)
    first, second = load_module(folder), load_module(folder)
    assert first.module is not second.module
    assert first.endpoint("query", "push") is not second.endpoint("query", "push")
    assert first.endpoint("query", "push").func(x=1) == 1
    assert first.endpoint("query", "push").func(x=2) == 2
    assert second.endpoint("query", "push").func(x=3) == 1


def test_loading_again_sees_the_edited_source(tmp_path):
    folder = write_module(tmp_path, "edited", """
        from sandbox import query

        @query()
        def version():
            return 1
    """)
    assert load_module(folder).endpoint("query", "version").func() == 1
    (folder / "__init__.py").write_text(textwrap.dedent("""
        from sandbox import query

        @query()
        def version():
            return 2

        @query()
        def added():
            return 0
    """), encoding="utf-8")
    again = load_module(folder)
    assert again.endpoint("query", "version").func() == 2
    assert again.endpoint("query", "added") is not None


def test_two_folders_do_not_see_each_others_endpoints(tmp_path):
    first = load_module(write_module(tmp_path, "first_mod", """
        from sandbox import query

        @query()
        def only_in_first():
            return 1
    """))
    second = load_module(write_module(tmp_path, "second_mod", """
        from sandbox import query

        @query()
        def only_in_second():
            return 2
    """))
    assert [e["name"] for e in first.describe()] == ["only_in_first"]
    assert [e["name"] for e in second.describe()] == ["only_in_second"]
    assert first.endpoint("query", "only_in_second") is None
    assert second.endpoint("query", "only_in_first") is None
    assert {e["module"] for e in second.describe()} == {"second_mod"}


def test_same_name_in_two_folders_loads_each_folder_own_code(tmp_path):
    one = load_module(write_module(tmp_path / "one", "samename", """
        from sandbox import query

        @query()
        def which():
            return "one"
    """))
    two = load_module(write_module(tmp_path / "two", "samename", """
        from sandbox import query

        @query()
        def which():
            return "two"
    """))
    assert one.endpoint("query", "which").func() == "one"
    assert two.endpoint("query", "which").func() == "two"
    assert one.path != two.path


def test_same_name_in_two_folders_loads_each_folder_own_submodules(tmp_path):
    source = """
        from sandbox import query
        from .helpers import VALUE

        @query()
        def which():
            return VALUE
    """
    one = load_module(write_module(tmp_path / "one", "samesub", source,
                                   files={"helpers.py": "VALUE = 'one'\n"}))
    two = load_module(write_module(tmp_path / "two", "samesub", source,
                                   files={"helpers.py": "VALUE = 'two'\n"}))
    assert one.endpoint("query", "which").func() == "one"
    assert two.endpoint("query", "which").func() == "two"
