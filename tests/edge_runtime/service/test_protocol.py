"""The wire protocol: every bad input maps to its error code, nothing else ever escapes decoding."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.classifier import Prediction
from edge_runtime.service.errors import RequestError
from edge_runtime.service.protocol import (
    ErrorCode,
    Request,
    Topics,
    decode_request,
    encode_error,
    encode_reply,
    encode_status,
    reply_topic_allowed,
    valid_thing_name,
)

LIMITS = {"max_text_chars": 20, "max_texts": 3, "max_payload_bytes": 200}


def decode(payload: bytes | str | object) -> Request:
    if not isinstance(payload, (bytes, str)):
        payload = json.dumps(payload)
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return decode_request(payload, **LIMITS)


def test_topics_follow_the_aws_iot_topic_design():
    t = Topics.for_thing("kitchen-pi")
    assert (t.request, t.response, t.telemetry, t.status) == (
        "cmd/intents/kitchen-pi/request", "cmd/intents/kitchen-pi/response",
        "dt/intents/kitchen-pi/telemetry", "dt/intents/kitchen-pi/status")
    assert Topics.for_thing("{iot:thingName}").request == "cmd/intents/{iot:thingName}/request"


@pytest.mark.parametrize("name, ok", [("kitchen-pi", True), ("a:b_c-1", True), ("", False), ("a/b", False),
                                      ("a+b", False), ("#", False), ("x" * 129, False), ("pi 4", False)])
def test_thing_names_that_could_change_a_topic_are_refused(name, ok):
    assert valid_thing_name(name) is ok


def test_a_text_request_and_a_texts_request_decode():
    assert decode({"id": "r1", "text": "play jazz"}) == Request("r1", ("play jazz",), batch=False)
    assert decode({"id": "r2", "texts": ["a b", "c"], "extra": 1}) == Request("r2", ("a b", "c"), batch=True)


@pytest.mark.parametrize("payload, code, echoed", [
    (b"x" * 201, ErrorCode.PAYLOAD_TOO_LARGE, None),
    (b"\xff\xfe{}", ErrorCode.BAD_ENCODING, None),
    (b"{not json", ErrorCode.BAD_JSON, None),
    ([1, 2], ErrorCode.BAD_REQUEST, None),
    ({"text": "play jazz"}, ErrorCode.BAD_REQUEST, None),          # missing id
    ({"id": None, "text": "x"}, ErrorCode.BAD_REQUEST, None),
    ({"id": 7, "text": "x"}, ErrorCode.BAD_REQUEST, 7),            # wrong id type: refused, but echoed
    ({"id": "", "text": "x"}, ErrorCode.BAD_REQUEST, None),
    ({"id": "r", "text": "x", "texts": ["y"]}, ErrorCode.BAD_REQUEST, "r"),
    ({"id": "r"}, ErrorCode.BAD_REQUEST, "r"),
    ({"id": "r", "text": 5}, ErrorCode.BAD_REQUEST, "r"),
    ({"id": "r", "texts": "play"}, ErrorCode.BAD_REQUEST, "r"),
    ({"id": "r", "texts": ["ok", None]}, ErrorCode.BAD_REQUEST, "r"),
    ({"id": "r", "text": ""}, ErrorCode.EMPTY_TEXT, "r"),
    ({"id": "r", "text": " \n\t"}, ErrorCode.EMPTY_TEXT, "r"),
    ({"id": "r", "texts": []}, ErrorCode.EMPTY_TEXT, "r"),
    ({"id": "r", "texts": ["ok", ""]}, ErrorCode.EMPTY_TEXT, "r"),
    ({"id": "r", "text": "x" * 21}, ErrorCode.TEXT_TOO_LONG, "r"),
    ({"id": "r", "texts": ["a", "b", "c", "d"]}, ErrorCode.TOO_MANY_TEXTS, "r"),
    (b'{"id": "r", "text": "\\ud800 lone surrogate"}', ErrorCode.BAD_ENCODING, "r"),
    (b'{"id": "\\udfff", "text": "x"}', ErrorCode.BAD_REQUEST, None),
])
def test_each_bad_request_gets_its_own_error_code(payload, code, echoed):
    with pytest.raises(RequestError) as info:
        decode(payload)
    assert info.value.code == code.value
    assert info.value.request_id == echoed
    assert info.value.message


def test_json_nested_too_deeply_is_bad_json_not_a_crash():
    with pytest.raises(RequestError) as info:
        decode_request(b"[" * 50_000 + b"]" * 50_000, max_text_chars=20, max_texts=3, max_payload_bytes=10**6)
    assert info.value.code == "bad_json"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_a_request_error(payload):
    try:
        req = decode_request(payload, **LIMITS)
    except RequestError as exc:
        assert ErrorCode.parse(exc.code)
    else:
        assert req.texts and all(t.strip() for t in req.texts)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=25),
                           lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children,
                                                                                              max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional={"id": json_values, "text": json_values, "texts": json_values}))
def test_arbitrary_json_objects_decode_or_raise_a_request_error(obj):
    try:
        req = decode(obj)
    except RequestError as exc:
        # the error reply is always encodable, whatever the request held
        assert json.loads(encode_error(exc.request_id, exc.code, exc.message))["error"]["code"] == exc.code
    else:
        assert isinstance(req.id, str) and 1 <= len(req.texts) <= LIMITS["max_texts"]
        assert all(isinstance(t, str) and 0 < len(t) <= LIMITS["max_text_chars"] for t in req.texts)


def test_replies_have_the_contract_shape():
    pred = Prediction("PlayMusic", 0.9, (("PlayMusic", 0.9), ("RateBook", 0.05)))
    model = {"name": "snips", "version": "3"}
    one = json.loads(encode_reply(Request("r1", ("play",)), [pred], model, 1.23456))
    assert one == {"id": "r1", "intent": "PlayMusic", "confidence": 0.9,
                   "top": [{"intent": "PlayMusic", "confidence": 0.9}, {"intent": "RateBook", "confidence": 0.05}],
                   "model": model, "latency_ms": 1.235}
    many = json.loads(encode_reply(Request("r2", ("a", "b"), batch=True), [pred, pred], model, 2.0))
    assert set(many) == {"id", "results", "model", "latency_ms"} and len(many["results"]) == 2
    assert many["results"][0] == {k: one[k] for k in ("intent", "confidence", "top")}
    with pytest.raises(ValueError):
        encode_reply(Request("r3", ("a", "b"), batch=True), [pred], model, 1.0)


def test_errors_and_status_have_the_contract_shape():
    assert json.loads(encode_error(None, "bad_json", "payload is not JSON")) == {
        "id": None, "error": {"code": "bad_json", "message": "payload is not JSON"}}
    assert json.loads(encode_error("r1", ErrorCode.OVERLOADED, "busy"))["id"] == "r1"
    with pytest.raises(ValueError):
        encode_error("r1", "no_such_code", "x")
    status = json.loads(encode_status("online", thing="t", model={"name": "m", "version": "1"}, backend="onnxruntime",
                                      uptime_s=1.23456, counters={"received": 1}))
    assert status["state"] == "online" and status["counters"] == {"received": 1} and status["uptime_s"] == 1.235


@pytest.mark.parametrize("topic, ok", [
    ("cmd/intents/t/response", True),
    ("cmd/intents/t/response/client-7", True),
    ("cmd/intents/t/responses", False),          # a sibling, not below the prefix
    ("cmd/intents/t/request", False),            # would feed the service its own replies
    ("dt/intents/t/status", False),
    ("cmd/intents/t/response/+", False),
    ("cmd/intents/t/response/#", False),
    ("$aws/things/t/shadow/update", False),
    ("cmd/intents/t/response/", False),
    ("", False),
])
def test_a_response_topic_must_lie_under_an_allowed_prefix(topic, ok):
    assert reply_topic_allowed(topic, ["cmd/intents/t/response"]) is ok
