"""Event properties (SPEC §4): registry, dispatch on sources, namespaces, caching,
collisions, entry points, and property paths in handler filters.

Every test writes its own ``properties.py`` files under ``tmp_path`` and builds a
registry from them; nothing here starts a process.
"""
from __future__ import annotations

import importlib.metadata
import textwrap
import types

import mongoquery
import pytest

from sandbox.filters import compile_filter, raw_part
from sandbox.errors import ModuleLoadError
from sandbox.events import Event
from hostd.catalog import PropertyCatalog
from sandbox.layers import LayeredRegistry, describe_plugin
from sandbox.properties import (ENTRY_POINT_GROUP, build_registry, event_property, event_source, module_plugin,
                                properties_file)

pytestmark = pytest.mark.timeout(60)

#: A data layer with two sources: edX tracking-log events and xAPI statements.
TWO_SOURCES = '''
    from sandbox.properties import event_property, event_source

    CALLS = []

    @event_source("edx")
    def is_edx(event):
        return "event_type" in event

    @event_source("xapi")
    def is_xapi(event):
        return "actor" in event and "verb" in event and "object" in event

    @event_property(namespace="tincan", name="actor", source="edx")
    def edx_actor(event):
        """The learner as an xAPI Agent.

        More text that the description leaves out.
        """
        CALLS.append(("edx_actor", event["username"]))
        return {"objectType": "Agent", "account": {"homePage": "http://lms", "name": event["username"]}}

    @event_property(namespace="tincan", name="actor", source="xapi")
    def xapi_actor(event):
        CALLS.append(("xapi_actor", event.event["actor"].get("mbox")))
        return dict(event.event["actor"])

    @event_property(namespace="tincan", name="verb", source="edx")
    def edx_verb(event):
        """The xAPI verb of the event."""
        CALLS.append(("edx_verb", event["event_type"]))
        return {"id": "http://x/" + event["event_type"]}

    @event_property(namespace="tincan", name="verb", source="xapi")
    def xapi_verb(event):
        CALLS.append(("xapi_verb", event["verb"]["id"]))
        return dict(event["verb"])

    @event_property(name="agent")
    def agent(event):
        """Who did it: the actor's account name or mbox, through ``tincan.actor``."""
        CALLS.append(("agent", None))
        actor = event.tincan.actor
        return (actor.get("account") or {}).get("name") or actor.get("mbox")

    @event_property(namespace="video.segment", name="start", source="edx")
    def segment_start(event):
        """Where the video segment starts."""
        return event["event"]["currentTime"]
'''


def write_properties(tmp_path, module: str, source: str):
    """Write ``<tmp_path>/<module>/properties.py``. :returns: its path."""
    folder = tmp_path / module
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "properties.py"
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def edx(event_type="play_video", username="bob", **more):
    return {"event_type": event_type, "username": username, "event": {"currentTime": 12.5}, **more}


def xapi(verb="http://x/played", mbox="mailto:ann@example.com"):
    return {"actor": {"objectType": "Agent", "mbox": mbox}, "verb": {"id": verb},
            "object": {"id": "http://x/video/1"}}


@pytest.fixture
def layer(tmp_path):
    """``(registry, module of the data layer)`` built from :data:`TWO_SOURCES`."""
    registry = build_registry({"layer": write_properties(tmp_path, "layer", TWO_SOURCES)}, entry_points=False)
    calls = _calls_list(registry)
    calls.clear()
    return registry, calls


def _calls_list(registry) -> list:
    """The ``CALLS`` list of the data layer the registry imported (its functions' globals)."""
    impl = registry._impls[("tincan", "actor")]["edx"]
    return impl.__globals__["CALLS"]


# -- dispatch -------------------------------------------------------------------

def test_dispatch_calls_the_implementation_of_the_event_source(layer):
    registry, calls = layer
    assert registry.sources_of(Event(edx(), properties=registry)) == ["edx"]
    evt = Event(edx(username="bob"), properties=registry)
    assert evt.tincan.actor == {"objectType": "Agent", "account": {"homePage": "http://lms", "name": "bob"}}
    assert evt.tincan.verb == {"id": "http://x/play_video"}
    assert calls == [("edx_actor", "bob"), ("edx_verb", "play_video")]

    calls.clear()
    statement = Event(xapi(verb="http://x/paused"), properties=registry)
    assert statement.tincan.verb == {"id": "http://x/paused"}
    assert statement.tincan.actor == {"objectType": "Agent", "mbox": "mailto:ann@example.com"}
    assert calls == [("xapi_verb", "http://x/paused"), ("xapi_actor", "mailto:ann@example.com")]


def test_without_a_matching_source_each_implementation_is_tried_until_one_answers(tmp_path):
    path = write_properties(tmp_path, "fallback", '''
        from sandbox.properties import event_property, event_source

        TRIED = []

        @event_source("a")
        def is_a(event):
            return event.get("kind") == "a"

        @event_source("b")
        def is_b(event):
            return event.get("kind") == "b"

        @event_property(name="label", source="a")
        def label_a(event):
            TRIED.append("a")
            return event.get("a_label")

        @event_property(name="label", source="b")
        def label_b(event):
            TRIED.append("b")
            return event.get("b_label")
    ''')
    registry = build_registry({"fallback": path}, entry_points=False)
    tried = registry._impls[(None, "label")]["a"].__globals__["TRIED"]

    # The source matches: only its implementation runs, even when it answers None.
    assert Event({"kind": "b", "a_label": "A", "b_label": "B"}, properties=registry).label == "B"
    assert tried == ["b"]
    tried.clear()
    assert Event({"kind": "a", "b_label": "B"}, properties=registry).label is None
    assert tried == ["a"]

    # No source matches: each implementation in turn until one returns non-None.
    tried.clear()
    assert Event({"b_label": "B"}, properties=registry).label == "B"
    assert tried == ["a", "b"]
    tried.clear()
    assert Event({"a_label": "A", "b_label": "B"}, properties=registry).label == "A"
    assert tried == ["a"]
    tried.clear()
    assert Event({"other": 1}, properties=registry).label is None
    assert tried == ["a", "b"]


def test_a_source_predicate_that_raises_does_not_match(tmp_path):
    path = write_properties(tmp_path, "picky", '''
        from sandbox.properties import event_property, event_source

        @event_source("picky")
        def is_picky(event):
            return event["must_exist"] == 1

        @event_property(name="kind", source="picky")
        def kind(event):
            return "picky"
    ''')
    registry = build_registry({"picky": path}, entry_points=False)
    assert registry.sources_of(Event({"x": 1}, properties=registry)) == []
    assert registry.sources_of(Event({"must_exist": 1}, properties=registry)) == ["picky"]
    # no source matched, so the only implementation is tried anyway
    assert Event({"x": 1}, properties=registry).kind == "picky"


def test_property_without_namespace_and_properties_using_properties(layer):
    registry, calls = layer
    assert Event(edx(username="carl"), properties=registry).agent == "carl"
    assert calls == [("agent", None), ("edx_actor", "carl")]
    assert Event(xapi(mbox="mailto:dee@example.com"), properties=registry).agent == "mailto:dee@example.com"


def test_nested_namespaces(layer):
    registry, _ = layer
    evt = Event(edx(), properties=registry)
    assert evt.video.segment.start == 12.5
    assert registry.names() == ["agent", "tincan", "video"]
    assert registry.names("video") == ["segment"]
    assert registry.names("video.segment") == ["start"]
    assert dir(evt.video) == ["segment"]
    assert "start" in repr(evt.video.segment)


def test_a_property_is_computed_once_per_event(layer):
    registry, calls = layer
    evt = Event(edx(username="eve"), properties=registry)
    first = evt.tincan.actor
    assert evt.tincan.actor == first
    assert evt.agent == "eve"   # uses tincan.actor: still not recomputed
    assert evt.agent == "eve"
    assert calls == [("edx_actor", "eve"), ("agent", None)]

    # another event (even an equal one) computes its own
    other = Event(edx(username="eve"), properties=registry)
    assert other.tincan.actor == first
    assert calls.count(("edx_actor", "eve")) == 2


# -- unknown names ----------------------------------------------------------------

def test_unknown_property_names_the_known_ones(layer):
    registry, _ = layer
    evt = Event(edx(), properties=registry)
    with pytest.raises(AttributeError) as top:
        evt.nope
    message = str(top.value)
    assert "'nope'" in message
    for known in ("agent", "tincan", "video"):
        assert known in message
    with pytest.raises(AttributeError) as inside:
        evt.tincan.colour
    message = str(inside.value)
    assert "'colour'" in message and "tincan" in message
    assert "actor" in message and "verb" in message
    with pytest.raises(AttributeError) as deeper:
        evt.video.segment.end
    assert "'end'" in str(deeper.value) and "start" in str(deeper.value)
    # getattr with a default and hasattr work as for any object
    assert getattr(evt.tincan, "colour", "none") == "none"
    assert not hasattr(evt, "nope")


def test_without_properties_an_attribute_error_says_none_are_loaded():
    evt = Event({"a": 1})
    with pytest.raises(AttributeError, match="no event properties are loaded"):
        evt.tincan


# -- collisions and load errors ----------------------------------------------------

CLASH = '''
    from sandbox.properties import event_property

    @event_property(namespace="tincan", name="verb", source="edx")
    def my_verb(event):
        return {"id": "http://other/verb"}
'''


def test_two_modules_defining_the_same_property_and_source_is_an_error_naming_both(tmp_path):
    files = {"layer": write_properties(tmp_path, "layer", TWO_SOURCES),
             "rival": write_properties(tmp_path, "rival", CLASH)}
    with pytest.raises(ModuleLoadError) as err:
        build_registry(files, entry_points=False)
    message = str(err.value)
    assert "layer" in message and "rival" in message
    assert "tincan.verb" in message and "edx" in message


def test_same_property_for_another_source_is_no_collision(tmp_path):
    files = {"layer": write_properties(tmp_path, "layer", TWO_SOURCES),
             "more": write_properties(tmp_path, "more", '''
                 from sandbox.properties import event_property, event_source

                 @event_source("caliper")
                 def is_caliper(event):
                     return event.get("@context") == "caliper"

                 @event_property(namespace="tincan", name="verb", source="caliper")
                 def caliper_verb(event):
                     return {"id": "http://caliper/" + event["action"]}
             ''')}
    registry = build_registry(files, entry_points=False)
    evt = Event({"@context": "caliper", "action": "Viewed"}, properties=registry)
    assert evt.tincan.verb == {"id": "http://caliper/Viewed"}
    verb = next(p for p in registry.describe() if p["name"] == "verb")
    assert verb["sources"] == ["caliper", "edx", "xapi"]
    assert verb["modules"] == ["module layer", "module more"]


def test_two_modules_declaring_the_same_source_is_an_error_naming_both(tmp_path):
    files = {"layer": write_properties(tmp_path, "layer", TWO_SOURCES),
             "copycat": write_properties(tmp_path, "copycat", '''
                 from sandbox.properties import event_source

                 @event_source("edx")
                 def also_edx(event):
                     return True
             ''')}
    with pytest.raises(ModuleLoadError) as err:
        build_registry(files, entry_points=False)
    assert "layer" in str(err.value) and "copycat" in str(err.value) and "'edx'" in str(err.value)


def describe_files(files: dict) -> tuple[dict, dict]:
    """What the confined probes answer, computed in-process: ``({origin: layer}, {origin: error})``."""
    described, errors = {}, {}
    for name, path in files.items():
        try:
            described[f"module {name}"] = {"origin": f"module {name}", "file": str(path),
                                           **describe_plugin(module_plugin(path, name))}
        except ModuleLoadError as err:
            errors[f"module {name}"] = str(err)
    return described, errors


def test_the_catalog_leaves_the_colliding_layer_out_and_sandboxes_import_layers_on_first_use(tmp_path):
    files = {"layer": write_properties(tmp_path, "layer", TWO_SOURCES),
             "rival": write_properties(tmp_path, "rival", CLASH),
             "broken": write_properties(tmp_path, "broken", "raise RuntimeError('no luck')\n"),
             "extra": write_properties(tmp_path, "extra", '''
                 from sandbox.properties import event_property

                 @event_property(name="size")
                 def size(event):
                     return len(event)
             ''')}
    described, errors = describe_files(files)
    assert set(errors) == {"module broken"} and "no luck" in errors["module broken"]
    catalog = PropertyCatalog.accept(described, sorted(described))
    # Which of two colliding layers is left out follows the claiming order
    # ("layer" < "rival"); what matters is that exactly one is, and both are named.
    assert set(catalog.failed) == {"module rival"}
    assert "layer" in catalog.failed["module rival"] and "rival" in catalog.failed["module rival"]
    assert {p["modules"][0] for p in catalog.describe()} == {"module layer", "module extra"}
    assert catalog.is_property_path("tincan.verb.id") and not catalog.is_property_path("event_type")
    registry = LayeredRegistry(**catalog.for_sandboxes())
    evt = Event(edx(), properties=registry)
    assert evt.size == 3
    assert registry.imported == ["module extra"]  # only what was used
    assert evt.tincan.verb == {"id": "http://x/play_video"}
    assert registry.imported == ["module extra", "module layer"]


def test_a_properties_file_that_raises_at_import_names_the_module(tmp_path):
    path = write_properties(tmp_path, "explodes", '''
        import json
        json.loads("{not json")
    ''')
    with pytest.raises(ModuleLoadError) as err:
        build_registry({"explodes": path}, entry_points=False)
    assert "explodes" in str(err.value)
    assert "JSONDecodeError" in str(err.value)


def test_properties_file_finds_a_module_folders_file(tmp_path):
    path = write_properties(tmp_path, "layer", TWO_SOURCES)
    assert properties_file(tmp_path / "layer") == path
    (tmp_path / "empty").mkdir()
    assert properties_file(tmp_path / "empty") is None


# -- entry points --------------------------------------------------------------------

def _package_module():
    package = types.ModuleType("insights_fake_package")

    @event_source("lti")
    def is_lti(event):
        return "lti_message_type" in event

    @event_property(namespace="lti", name="role", source="lti")
    def lti_role(event):
        """The LTI role of the user."""
        return event["roles"].split(",")[0]

    package.is_lti, package.lti_role = is_lti, lti_role
    package.not_a_property = lambda event: None
    return package


def test_entry_point_packages_contribute_properties(tmp_path, monkeypatch):
    monkeypatch.setattr("sandbox.properties._entry_point_modules", lambda: [("fakepkg", _package_module())])
    registry = build_registry({"layer": write_properties(tmp_path, "layer", TWO_SOURCES)})
    evt = Event({"lti_message_type": "basic", "roles": "Learner,Member"}, properties=registry)
    assert evt.lti.role == "Learner"
    assert registry.sources_of(evt) == ["lti"]
    role = next(p for p in registry.describe() if p["namespace"] == "lti")
    assert role["modules"] == ["package fakepkg"]
    assert role["doc"] == "The LTI role of the user."
    # entry_points=False leaves them out
    assert "lti" not in build_registry({}, entry_points=False).names()


class _FakeEntryPoint:
    def __init__(self, name, load):
        self.name = name
        self.load = load


def test_the_insights_properties_entry_point_group_is_read(monkeypatch):
    groups = []

    def entry_points(group=None, **_):
        groups.append(group)
        return [_FakeEntryPoint("fakepkg", _package_module)]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    registry = build_registry({})
    assert groups == [ENTRY_POINT_GROUP] == ["insights.properties"]
    assert Event({"lti_message_type": "x", "roles": "Instructor"}, properties=registry).lti.role == "Instructor"


def test_an_entry_point_that_fails_to_load_is_a_load_error_naming_it(monkeypatch):
    def broken():
        raise ImportError("missing dependency")

    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **_: [_FakeEntryPoint("brokenpkg", broken)])
    with pytest.raises(ModuleLoadError, match="brokenpkg.*missing dependency"):
        build_registry({})


def test_an_entry_point_colliding_with_a_module_is_an_error_naming_both(tmp_path, monkeypatch):
    package = types.ModuleType("insights_rival_package")
    package.verb = event_property(namespace="tincan", name="verb", source="xapi")(lambda event: None)
    monkeypatch.setattr("sandbox.properties._entry_point_modules", lambda: [("rivalpkg", package)])
    with pytest.raises(ModuleLoadError) as err:
        build_registry({"layer": write_properties(tmp_path, "layer", TWO_SOURCES)})
    assert "module layer" in str(err.value) and "package rivalpkg" in str(err.value)


# -- describe, value_at, Event ----------------------------------------------------------

def test_describe_lists_namespace_name_sources_doc_and_modules(layer):
    registry, _ = layer
    described = {(p["namespace"], p["name"]): p for p in registry.describe()}
    assert set(described) == {(None, "agent"), ("tincan", "actor"), ("tincan", "verb"),
                              ("video.segment", "start")}
    for entry in described.values():
        assert set(entry) == {"namespace", "name", "sources", "doc", "modules"}
        assert entry["modules"] == ["module layer"]
    assert described[("tincan", "actor")]["sources"] == ["edx", "xapi"]
    assert described[("tincan", "actor")]["doc"] == "The learner as an xAPI Agent."  # first paragraph
    assert described[("tincan", "verb")]["doc"] == "The xAPI verb of the event."
    assert described[(None, "agent")]["sources"] == ["*"]  # any source
    assert described[(None, "agent")]["doc"].startswith("Who did it")
    assert described[("video.segment", "start")]["sources"] == ["edx"]


def test_value_at_digs_into_property_values(layer):
    registry, _ = layer
    evt = Event(edx(username="fay"), properties=registry)
    assert registry.value_at(evt, "tincan.verb.id") == (True, "http://x/play_video")
    assert registry.value_at(evt, "tincan.actor.account.name") == (True, "fay")
    assert registry.value_at(evt, "tincan.actor.account.missing") == (True, None)
    assert registry.value_at(evt, "tincan.verb.id.deeper") == (True, None)  # not a dict
    assert registry.value_at(evt, "agent") == (True, "fay")
    assert registry.value_at(evt, "video.segment.start") == (True, 12.5)
    assert registry.value_at(evt, "username") == (False, None)   # a plain field
    assert registry.value_at(evt, "tincan") == (False, None)     # a namespace, not a property
    assert registry.property_prefix("tincan.verb.id") == ("tincan", "verb")
    assert registry.property_prefix("video.segment.start") == ("video.segment", "start")
    assert registry.property_prefix("event.currentTime") is None


def test_event_is_an_immutable_mapping_listing_its_properties(layer):
    registry, _ = layer
    raw = edx(username="gus")
    evt = Event(raw, {"seq": 3, "source": "http"}, registry)
    assert evt["username"] == "gus" and "event_type" in evt and set(evt.keys()) == set(raw)
    assert evt.event == raw and evt.meta["seq"] == 3
    with pytest.raises(AttributeError, match="immutable"):
        evt.username = "mallory"
    with pytest.raises(AttributeError, match="immutable"):
        evt.tincan = None
    with pytest.raises(TypeError):
        evt.event["username"] = "mallory"
    with pytest.raises(TypeError):
        evt["username"] = "mallory"
    raw["username"] = "changed later"  # the event kept its own copy
    assert evt["username"] == "gus"
    names = dir(evt)
    for name in ("agent", "tincan", "video", "event", "meta", "keys"):
        assert name in names
    assert dir(evt.tincan) == ["actor", "verb"]


# -- filters with property paths ----------------------------------------------------------

def _doc(event, source="http", seq=1):
    """A log document as delivery reads it."""
    return {"event": event, "source": source, "seq": seq}


def test_filter_on_a_property_path_matches_the_property_value(layer):
    registry, _ = layer
    matches = compile_filter({"tincan.verb.id": "http://x/played"}, "consumer", registry)
    assert matches(_doc(edx(event_type="played")))
    assert not matches(_doc(edx(event_type="paused")))
    assert matches(_doc(xapi(verb="http://x/played"), source="xapi"))
    assert not matches(_doc(xapi(verb="http://x/paused"), source="xapi"))
    # a raw field of the same shape does not fool it: the property decides
    assert not matches(_doc({**edx(event_type="paused"), "tincan": {"verb": {"id": "http://x/played"}}}))


def test_filter_combines_properties_plain_fields_and_operators(layer):
    registry, _ = layer
    both = compile_filter({"tincan.verb.id": "http://x/played", "username": "bob"}, "c", registry)
    assert both(_doc(edx(event_type="played", username="bob")))
    assert not both(_doc(edx(event_type="played", username="ann")))
    assert not both(_doc(edx(event_type="paused", username="bob")))

    either = compile_filter({"$or": [{"tincan.verb.id": "http://x/paused"}, {"agent": "mailto:z@example.com"}]},
                            "c", registry)
    assert either(_doc(edx(event_type="paused")))
    assert either(_doc(xapi(verb="http://x/played", mbox="mailto:z@example.com")))
    assert not either(_doc(xapi(verb="http://x/played", mbox="mailto:y@example.com")))

    conjunction = compile_filter({"$and": [{"tincan.actor.account.name": {"$in": ["bob", "carl"]}},
                                           {"event.currentTime": {"$gt": 10}},
                                           {"video.segment.start": 12.5}]}, "c", registry)
    assert conjunction(_doc(edx(username="carl")))
    assert not conjunction(_doc(edx(username="dan")))
    assert not conjunction(_doc(xapi()))   # no account, no currentTime

    names = compile_filter({"agent": {"$regex": "^mailto:"}}, "c", registry)
    assert names(_doc(xapi())) and not names(_doc(edx()))


def test_a_property_raising_on_an_event_is_no_match(layer):
    registry, _ = layer
    matches = compile_filter({"tincan.verb.id": "http://x/played"}, "c", registry)
    # an edX event without event_type is not "edx"; the edx implementation (tried
    # as a fallback) raises KeyError on it: no match, no exception
    assert not matches(_doc({"username": "bob"}))
    assert not matches(_doc({"actor": "not a dict", "verb": 3, "object": None}))
    segment = compile_filter({"video.segment.start": {"$gte": 0}}, "c", registry)
    assert segment(_doc(edx()))
    assert not segment(_doc({"event_type": "x", "username": "u"}))  # no "event" field: raises inside


def test_a_property_raising_on_an_event_does_not_exist_for_the_filter(layer):
    registry, _ = layer
    segment = compile_filter({"video.segment.start": {"$exists": True}}, "c", registry)
    assert segment(_doc(edx()))
    assert not segment(_doc({"event_type": "x", "username": "u"}))


def test_filters_with_properties_still_exclude_the_modules_own_events(layer):
    registry, _ = layer
    matches = compile_filter({"tincan.verb.id": "http://x/played"}, "consumer", registry)
    assert matches(_doc(edx(event_type="played"), source="module:other"))
    assert not matches(_doc(edx(event_type="played"), source="module:consumer"))
    unfiltered = compile_filter(None, "consumer", registry)
    assert unfiltered(_doc(edx())) and not unfiltered(_doc(edx(), source="module:consumer"))
    by_source = compile_filter({"source": "xapi", "agent": "mailto:ann@example.com"}, "consumer", registry)
    assert by_source(_doc(xapi(), source="xapi"))
    assert not by_source(_doc(xapi(), source="http"))


def test_a_filter_without_properties_loaded_matches_raw_fields(layer):
    plain = compile_filter({"tincan.verb.id": "http://x/played"}, "c", None)
    assert plain(_doc({"tincan": {"verb": {"id": "http://x/played"}}}))
    assert not plain(_doc(edx(event_type="played")))


def test_hostd_keeps_only_the_raw_clauses_of_a_filter_and_never_loses_a_match():
    is_property = {"tincan.verb.id", "tincan.actor"}.__contains__
    assert raw_part({"tincan.verb.id": "v", "event_type": "play"}, is_property) == {"event_type": "play"}
    assert raw_part({"tincan.verb.id": "v"}, is_property) == {}
    assert raw_part({"$and": [{"tincan.actor": 1}, {"a": 1}]}, is_property) == {"$and": [{"a": 1}]}
    assert raw_part({"$or": [{"a": 1}, {"b": 2}]}, is_property) == {"$or": [{"a": 1}, {"b": 2}]}
    assert raw_part({"$or": [{"a": 1}, {"tincan.actor": 2}]}, is_property) == {}  # one branch undecidable
    assert raw_part({"$nor": [{"tincan.actor": 2}], "a": 1}, is_property) == {"a": 1}
    assert raw_part(None, is_property) is None
    # every event the whole filter matches passes the raw part (checked on a small grid)
    whole = {"$or": [{"a": 1, "tincan.verb.id": "v"}, {"b": 2}], "c": {"$ne": 3}}
    raw = raw_part(whole, is_property)
    for a in (0, 1):
        for b in (0, 2):
            for c in (0, 3):
                for verb in ("v", "w"):
                    doc = {"a": a, "b": b, "c": c, "tincan": {"verb": {"id": verb}}}
                    if mongoquery.Query(whole).match(doc):
                        assert mongoquery.Query(raw).match(doc), (doc, raw)


def test_a_filter_naming_source_only_in_property_clauses_still_receives_own_events():
    own = {"event": {"k": 1}, "source": "module:m"}
    assert compile_filter({}, "m", names_source=True)(own)
    assert not compile_filter({}, "m")(own)
