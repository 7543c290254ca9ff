"""Injection by name and request-parameter conversion (:mod:`sandbox.injection`)."""
from __future__ import annotations

import pytest

from sandbox.errors import BadParameter, ModuleLoadError
from sandbox.injection import INJECTED, analyse, bind, check

pytestmark = pytest.mark.timeout(60)


class Services:
    """A stand-in for the runtime's injected services; records what was asked for."""

    def __init__(self):
        self.asked = []

    def __call__(self, name):
        self.asked.append(name)
        return f"<{name}>"


def call(func, params, kind="query"):
    """Analyse ``func`` like the loader does, then bind ``params`` and call it."""
    signature = analyse(func, kind=kind, where=f"mod.{func.__name__}")
    return func(**bind(signature, params, Services()))


# -- conversions -------------------------------------------------------------

def test_int_and_float_are_converted():
    def f(n: int, x: float):
        return n, x
    assert call(f, {"n": "12", "x": "2.5"}) == (12, 2.5)
    result = call(f, {"n": 3, "x": 4})
    assert result == (3, 4.0) and type(result[1]) is float


@pytest.mark.parametrize("value", ["abc", "1.5", ""])
def test_bad_int_names_the_parameter(value):
    def f(count: int):
        return count
    with pytest.raises(BadParameter) as info:
        call(f, {"count": value})
    assert info.value.param == "count"
    assert "count" in str(info.value)


def test_bad_float_names_the_parameter():
    def f(ratio: float):
        return ratio
    with pytest.raises(BadParameter) as info:
        call(f, {"ratio": "half"})
    assert info.value.param == "ratio"


def test_a_boolean_is_not_a_number():
    def f(n: int):
        return n
    with pytest.raises(BadParameter) as info:
        call(f, {"n": True})
    assert info.value.param == "n"


@pytest.mark.parametrize("text, expected", [
    ("true", True), ("false", False), ("1", True), ("0", False), ("yes", True), ("no", False),
    ("TRUE", True), (" No ", False), (True, True), (False, False),
])
def test_bool_values(text, expected):
    def f(flag: bool):
        return flag
    assert call(f, {"flag": text}) is expected


@pytest.mark.parametrize("text", ["maybe", "2", ""])
def test_bad_bool_names_the_parameter(text):
    def f(flag: bool):
        return flag
    with pytest.raises(BadParameter) as info:
        call(f, {"flag": text})
    assert info.value.param == "flag"
    assert "'flag'" in str(info.value)


def test_list_of_str_from_repeated_values():
    def f(tags: list[str]):
        return tags
    assert call(f, {"tags": ["a", "b", "c"]}) == ["a", "b", "c"]


def test_list_of_str_from_a_single_value():
    def f(tags: list[str]):
        return tags
    assert call(f, {"tags": "only"}) == ["only"]


def test_list_of_int_converts_each_item_and_names_the_parameter():
    def f(ns: list[int]):
        return ns
    assert call(f, {"ns": ["1", "2"]}) == [1, 2]
    with pytest.raises(BadParameter) as info:
        call(f, {"ns": ["1", "two"]})
    assert info.value.param == "ns"


def test_str_is_kept_and_numbers_become_text():
    def f(name: str):
        return name
    assert call(f, {"name": "bob"}) == "bob"
    assert call(f, {"name": 5}) == "5"


def test_str_refuses_structures():
    def f(name: str):
        return name
    with pytest.raises(BadParameter) as info:
        call(f, {"name": {"a": 1}})
    assert info.value.param == "name"


def test_a_scalar_given_twice_is_a_bad_parameter():
    def f(n: int):
        return n
    assert call(f, {"n": ["4"]}) == 4
    with pytest.raises(BadParameter) as info:
        call(f, {"n": ["4", "5"]})
    assert info.value.param == "n"


def test_unannotated_takes_the_value_as_given():
    def f(anything):
        return anything
    assert call(f, {"anything": "3"}) == "3"
    assert call(f, {"anything": ["a", "b"]}) == ["a", "b"]
    assert call(f, {"anything": {"k": 1}}) == {"k": 1}


def test_string_annotations_are_resolved():
    def f(n: "int", tags: "list[str]" = ()):
        return n, tags
    assert call(f, {"n": "7", "tags": "x"}) == (7, ["x"])


# -- required parameters and defaults ---------------------------------------

def test_missing_required_parameter_is_named():
    def f(course: str, user: str):
        return course, user
    with pytest.raises(BadParameter) as info:
        call(f, {"course": "c1"})
    assert info.value.param == "user"
    assert "missing" in str(info.value)


def test_defaults_apply_when_absent():
    def f(course: str, limit: int = 10, verbose: bool = False):
        return course, limit, verbose
    assert call(f, {"course": "c"}) == ("c", 10, False)
    assert call(f, {"course": "c", "limit": "3", "verbose": "yes"}) == ("c", 3, True)


def test_params_describe_types_requirement_and_defaults():
    def f(course: str, limit: int = 10, tags: list[str] = None, raw=None):
        pass
    signature = analyse(f, kind="query", where="mod.f")
    assert [p.describe() for p in signature.params] == [
        {"name": "course", "type": "str", "required": True, "default": None},
        {"name": "limit", "type": "int", "required": False, "default": 10},
        {"name": "tags", "type": "list[str]", "required": False, "default": None},
        {"name": "raw", "type": "any", "required": False, "default": None},
    ]


# -- injected names ----------------------------------------------------------

def test_injected_names_are_recognised_and_supplied():
    def f(db, fs, cache, query, view, emit, log, user: str):
        return db, fs, cache, query, view, emit, log, user
    signature = analyse(f, kind="query", where="mod.f")
    assert signature.injected == ("db", "fs", "cache", "query", "view", "emit", "log")
    assert [p.name for p in signature.params] == ["user"]
    services = Services()
    kwargs = bind(signature, {"user": "bob"}, services)
    assert f(**kwargs) == ("<db>", "<fs>", "<cache>", "<query>", "<view>", "<emit>", "<log>", "bob")
    assert sorted(services.asked) == sorted(["db", "fs", "cache", "query", "view", "emit", "log"])


def test_mongodb_is_an_alias_of_db():
    def f(mongodb):
        return mongodb
    services = Services()
    signature = analyse(f, kind="query", where="mod.f")
    assert f(**bind(signature, {}, services)) == "<db>"
    assert services.asked == ["db"]


def test_only_asked_services_are_fetched():
    def f(fs, n: int = 1):
        return fs
    services = Services()
    signature = analyse(f, kind="query", where="mod.f")
    bind(signature, {"n": "2"}, services)
    assert services.asked == ["fs"]


def test_injected_names_never_come_from_the_request():
    def f(db, fs, params, user: str):
        return db, fs, params, user
    result = call(f, {"db": "evil", "fs": "evil", "mongodb": "evil", "params": {"x": 1},
                      "user": "bob", "extra": "1"})
    assert result[0] == "<db>" and result[1] == "<fs>"
    assert result[2] == {"extra": "1"}
    assert result[3] == "bob"


def test_params_gets_only_the_extras():
    def f(params, a: int = 1):
        return a, params
    a, params = call(f, {"a": "5", "b": "x", "c": ["1", "2"], "cache": "evil"})
    assert a == 5
    assert params == {"b": "x", "c": ["1", "2"]}


def test_without_params_extras_are_ignored():
    def f(a: int = 1):
        return a
    assert call(f, {"a": "2", "unknown": "x"}) == 2


def test_events_are_injected_into_handlers():
    def handler(events, db):
        return events, db
    signature = analyse(handler, kind="handler", where="mod.handler")
    assert signature.injected == ("events", "db")
    assert signature.params == ()
    assert handler(**bind(signature, {"events": "evil"}, Services())) == ("<events>", "<db>")


def test_handler_may_have_request_params_with_defaults():
    def handler(events, threshold: int = 3):
        return threshold
    signature = analyse(handler, kind="handler", where="mod.handler")
    assert handler(**bind(signature, {}, Services())) == 3


def test_every_documented_name_is_injected():
    assert INJECTED == {"db", "mongodb", "fs", "cache", "query", "view", "events", "emit",
                        "params", "log"}


# -- category ----------------------------------------------------------------

def test_category_joins_request_params_in_signature_order():
    def f(db, user: str, fs, course: str = "", limit: int = 1):
        pass
    assert analyse(f, kind="query", where="mod.f").category == "user+course+limit"


def test_category_is_empty_without_request_params():
    def f(db, params):
        pass
    assert analyse(f, kind="view", where="mod.f").category == ""


# -- load errors -------------------------------------------------------------

def test_var_positional_is_a_load_error():
    def f(*args):
        pass
    with pytest.raises(ModuleLoadError) as info:
        analyse(f, kind="query", where="mymod.f")
    assert "mymod.f" in str(info.value) and "'args'" in str(info.value)


def test_var_keyword_is_a_load_error():
    def f(user: str, **kwargs):
        pass
    with pytest.raises(ModuleLoadError) as info:
        analyse(f, kind="view", where="mymod.f")
    assert "mymod.f" in str(info.value) and "'kwargs'" in str(info.value)


@pytest.mark.parametrize("annotation", [dict, set, object, dict[str, int]])
def test_unsupported_annotation_is_a_load_error(annotation):
    def f(config):
        pass
    f.__annotations__ = {"config": annotation}
    with pytest.raises(ModuleLoadError) as info:
        analyse(f, kind="query", where="mymod.f")
    assert "mymod.f" in str(info.value) and "'config'" in str(info.value)


def test_list_of_unsupported_items_is_a_load_error():
    def f(rows: list[dict]):
        pass
    with pytest.raises(ModuleLoadError, match="'rows'"):
        analyse(f, kind="query", where="mymod.f")


@pytest.mark.parametrize("kind", ["view", "query", "cron"])
def test_events_outside_a_handler_is_a_load_error(kind):
    def f(events):
        pass
    with pytest.raises(ModuleLoadError) as info:
        analyse(f, kind=kind, where="mymod.f")
    assert "mymod.f" in str(info.value) and "'events'" in str(info.value)


def test_handler_with_a_required_request_param_is_a_load_error():
    def handler(events, course: str):
        pass
    with pytest.raises(ModuleLoadError) as info:
        analyse(handler, kind="handler", where="mymod.handler")
    assert "mymod.handler" in str(info.value) and "'course'" in str(info.value)


def test_positional_only_parameter_is_a_load_error():
    def f(user: str, /):
        pass
    with pytest.raises(ModuleLoadError, match="'user'"):
        analyse(f, kind="query", where="mymod.f")


# -- values no annotation can take --------------------------------------------------

@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 1e300, 2.5, 2 ** 63,
                                   "9" * 30, "1e999", [2 ** 70]])
def test_an_int_out_of_range_or_not_whole_is_a_bad_parameter(value):
    def f(limit: int):
        return limit
    with pytest.raises(BadParameter) as info:
        call(f, {"limit": value})
    assert info.value.param == "limit"
    assert len(str(info.value)) < 120  # a long value is not echoed whole


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "1e999", float("nan"), 10 ** 400])
def test_a_float_that_is_not_finite_is_a_bad_parameter(value):
    def f(ratio: float):
        return ratio
    with pytest.raises(BadParameter) as info:
        call(f, {"ratio": value})
    assert info.value.param == "ratio"


def test_whole_floats_and_64_bit_bounds_are_ints():
    def f(a: int, b: int, c: int):
        return a, b, c
    assert call(f, {"a": 3.0, "b": str(2 ** 63 - 1), "c": -2 ** 63}) == (3, 2 ** 63 - 1, -2 ** 63)


def test_check_converts_like_bind_from_the_published_descriptions():
    def f(db, limit: int, tags: list[int], name: str = "x"):
        return limit
    described = [p.describe() for p in analyse(f, kind="query", where="mod.f").params]
    check(described, {"limit": "3", "tags": ["1", "2"], "other": object()})
    for params, bad in (({"tags": []}, "limit"), ({"limit": 1e999, "tags": []}, "limit"),
                        ({"limit": 1, "tags": ["x"]}, "tags"), ({"limit": 1, "tags": [], "name": {}}, "name")):
        with pytest.raises(BadParameter) as info:
            check(described, params)
        assert info.value.param == bad
