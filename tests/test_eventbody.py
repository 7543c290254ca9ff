"""Reading event batches from request bodies (:mod:`hostd.eventbody`)."""
from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs, urlencode

import pytest

from hostd.errors import BadEventBatch
from hostd.eventbody import events_from_body, events_from_form, events_from_json

pytestmark = pytest.mark.timeout(60)

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
ONE = {"username": "bob", "event_type": "play_video", "n": 1}
TWO = {"username": "amy", "event_type": "pause_video", "nested": {"a": [1, 2]}}


def body(document) -> bytes:
    return json.dumps(document).encode("utf-8")


def http_handler_body(message: str) -> bytes:
    """The body ``logging.handlers.HTTPHandler`` posts for ``log.info(message)``."""
    record = logging.LogRecord("tracking", logging.INFO, __file__, 1, message, None, None)
    # HTTPHandler.mapLogRecord returns record.__dict__; emit() urlencodes it
    return urlencode(dict(record.__dict__)).encode("utf-8")


# -- accepted ----------------------------------------------------------------

def test_an_object():
    assert events_from_body(body(ONE), JSON) == [ONE]


def test_a_list_of_objects():
    assert events_from_body(body([ONE, TWO]), JSON) == [ONE, TWO]


def test_a_json_string_of_an_object():
    assert events_from_body(body(json.dumps(ONE)), JSON) == [ONE]


def test_a_json_string_of_a_list():
    assert events_from_body(body(json.dumps([ONE, TWO])), JSON) == [ONE, TWO]


def test_a_list_of_json_strings():
    assert events_from_body(body([json.dumps(ONE), json.dumps(TWO)]), JSON) == [ONE, TWO]


def test_a_list_mixing_objects_and_json_strings():
    assert events_from_body(body([ONE, json.dumps(TWO)]), JSON) == [ONE, TWO]


def test_content_type_parameters_and_missing_type():
    assert events_from_body(body(ONE), "application/json; charset=utf-8") == [ONE]
    assert events_from_body(body([ONE]), "") == [ONE]
    assert events_from_body(body(ONE), None) == [ONE]


def test_json_sent_as_form_content_type_is_still_json():
    assert events_from_body(body([ONE, TWO]), FORM) == [ONE, TWO]


def test_http_handler_form_body():
    raw = http_handler_body(json.dumps(ONE))
    assert b"msg=" in raw and b"levelname=INFO" in raw
    assert events_from_body(raw, FORM) == [ONE]
    assert events_from_body(raw, FORM + "; charset=utf-8") == [ONE]


def test_http_handler_form_with_a_list_message():
    raw = http_handler_body(json.dumps([ONE, TWO]))
    assert events_from_body(raw, FORM) == [ONE, TWO]


def test_http_handler_query_string_fields():
    """``GET /event``: HTTPHandler puts the same fields in the query string."""
    fields = parse_qs(http_handler_body(json.dumps(ONE)).decode(), keep_blank_values=True)
    assert events_from_form(fields) == [ONE]
    assert events_from_form({"msg": json.dumps(TWO)}) == [TWO]


def test_unicode_survives():
    event = {"username": "zoë", "text": "日本語"}
    assert events_from_body(body(event), JSON) == [event]
    assert events_from_body(http_handler_body(json.dumps(event, ensure_ascii=False)), FORM) == [event]


def test_events_from_json_on_decoded_documents():
    assert events_from_json(ONE) == [ONE]
    assert events_from_json([ONE, json.dumps(TWO)]) == [ONE, TWO]
    assert events_from_json(json.dumps([ONE])) == [ONE]


# -- rejected ----------------------------------------------------------------

def test_a_non_object_item_is_named_by_index():
    with pytest.raises(BadEventBatch) as info:
        events_from_body(body([ONE, TWO, 3, ONE]), JSON)
    assert info.value.index == 2
    assert "item 2" in str(info.value)
    assert info.value.to_reply_fields()["index"] == 2
    assert info.value.code == "bad_event"


@pytest.mark.parametrize("bad", [3, None, [ONE], "text", True])
def test_any_non_object_is_named_by_index(bad):
    with pytest.raises(BadEventBatch) as info:
        events_from_json([ONE, bad])
    assert info.value.index == 1


def test_an_invalid_json_string_item_is_named_by_index():
    with pytest.raises(BadEventBatch) as info:
        events_from_body(body([json.dumps(ONE), "{not json", ONE]), JSON)
    assert info.value.index == 1
    assert "item 1" in str(info.value)
    assert "invalid JSON" in str(info.value)


def test_a_json_string_item_that_is_not_an_object_is_named():
    with pytest.raises(BadEventBatch) as info:
        events_from_json([ONE, ONE, ONE, "[1, 2]"])
    assert info.value.index == 3


def test_an_empty_list():
    with pytest.raises(BadEventBatch) as info:
        events_from_body(b"[]", JSON)
    assert info.value.index is None
    assert "empty" in str(info.value)


@pytest.mark.parametrize("raw", [b"42", b"3.5", b"null", b"true", b'"just text"', b'"42"'])
def test_a_scalar_body(raw):
    with pytest.raises(BadEventBatch) as info:
        events_from_body(raw, JSON)
    assert info.value.index is None


def test_invalid_json_body():
    with pytest.raises(BadEventBatch, match="invalid JSON") as info:
        events_from_body(b'{"a": ', JSON)
    assert info.value.index is None


def test_non_utf8_body():
    with pytest.raises(BadEventBatch, match="UTF-8") as info:
        events_from_body(b'{"a": "\xff\xfe"}', JSON)
    assert info.value.index is None


def test_form_without_msg():
    with pytest.raises(BadEventBatch, match="msg") as info:
        events_from_body(urlencode({"name": "x", "levelname": "INFO"}).encode(), FORM)
    assert info.value.index is None


def test_form_whose_msg_is_not_json():
    with pytest.raises(BadEventBatch):
        events_from_body(http_handler_body("plain log line"), FORM)
    with pytest.raises(BadEventBatch):
        events_from_body(http_handler_body("{broken"), FORM)


# -- values the store cannot hold --------------------------------------------------

def nested(levels: int) -> str:
    """A JSON object nested ``levels`` deep (the outer object being the first level)."""
    return '{"a": ' * (levels - 1) + '{"x": 1}' + "}" * (levels - 1)


@pytest.mark.parametrize("raw, words, index", [
    ('{"a": NaN}', ["NaN", "at a"], 1),
    ('{"a": Infinity}', ["Infinity"], 1),
    ('{"a": -Infinity}', ["-Infinity"], 1),
    ('{"a": {"b": [1, 1e999]}}', ["1e999", "64-bit float", "at a.b[1]"], 1),
    ('{"a": 9223372036854775808}', ["9223372036854775808", "64-bit integer"], 1),
    ('{"a": -9223372036854775809}', ["64-bit integer"], 1),
    ('{"a": ' + "9" * 5000 + "}", ["64-bit integer"], 1),
    ('{"a\\u0000b": 1}', ["NUL"], 1),
    ('{"a": {"$where": 1}}', ["'$where'", "at a"], 1),
    ('{"a": "\\ud800"}', ["surrogate"], 1),
    ('{"\\udfff": 1}', ["surrogate"], 1),
    (nested(100), ["deeper than 99 levels"], 1),
    (nested(5000), ["deeper than"], None),  # past what the parser itself nests
])
def test_what_the_store_cannot_hold_is_refused_naming_the_item(raw, words, index):
    with pytest.raises(BadEventBatch) as info:
        events_from_body(f'[{{"id": "p1"}}, {raw}]'.encode(), JSON)
    assert info.value.index == index
    for word in words:
        assert word in str(info.value)


def test_refused_inside_a_json_string_item_and_a_form_record():
    with pytest.raises(BadEventBatch) as info:
        events_from_json([ONE, json.dumps(ONE), '{"a": NaN}'])
    assert info.value.index == 2 and "NaN" in str(info.value)
    with pytest.raises(BadEventBatch, match="64-bit integer"):
        events_from_body(http_handler_body('{"a": 18446744073709551615}'), FORM)


def test_what_the_store_can_hold_is_kept_exactly():
    event = {"max": 9223372036854775807, "min": -9223372036854775808, "tiny": 1e-999, "big": 1.7e308,
             "emoji": "\U0001F600", "dotted.key": 1, "mid$dollar": 2, "deep": json.loads(nested(98))}
    assert events_from_body(body(event), JSON) == [event]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 2 ** 63, -2 ** 63 - 1, "\udc80"])
def test_decoded_documents_are_checked_too(value):
    with pytest.raises(BadEventBatch) as info:
        events_from_json([ONE, {"nested": [{"value": value}]}])
    assert info.value.index == 1 and "nested[0].value" in str(info.value)
