"""Bad input: property tests of the request decoder and the tokenizer path, and a fuzz run over a real broker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.service.config import ServiceConfig
from edge_runtime.service.errors import RequestError
from edge_runtime.service.protocol import ErrorCode, Topics, decode_request
from tests.edge_runtime.service.broker import MOSQUITTO, Client, Mosquitto
from tests.reliability.fuzz_inputs import FIELDS, HUGE_INTS, OVERFLOW_FLOATS, _with_field, fuzz_inputs

LIMITS = {"max_text_chars": 512, "max_texts": 32, "max_payload_bytes": 65536}
CODES = {c.value for c in ErrorCode}
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner,
                                                                                        max_size=5), max_leaves=30)


def _decode_or_refuse(payload: bytes) -> None:
    try:
        req = decode_request(payload, **LIMITS)
    except RequestError as exc:
        assert exc.code in CODES
    else:
        assert req.texts and all(isinstance(t, str) and 0 < len(t) <= 512 for t in req.texts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_the_decoder_refuses_any_bytes_with_a_request_error(payload):
    _decode_or_refuse(payload)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional={"id": json_values | st.text(), "text": json_values | st.text(),
                                           "texts": json_values | st.lists(st.text())}))
def test_the_decoder_takes_any_json_object_without_crashing(obj):
    _decode_or_refuse(json.dumps(obj).encode("utf-8", "surrogatepass"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=200), min_size=1, max_size=8))
def test_the_tokenizer_path_classifies_any_valid_text(clf, texts):
    texts = [t for t in texts if t.strip()] or ["x"]
    try:
        for t in texts:
            t.encode("utf-8")
    except UnicodeEncodeError:
        return  # the decoder refuses lone surrogates before they reach the tokenizer
    preds = clf.predict_batch(texts)
    assert len(preds) == len(texts) and all(0.0 <= p.confidence <= 1.0 for p in preds)


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("raw", HUGE_INTS + OVERFLOW_FLOATS + [b"[" * 50000 + b"]" * 50000])
def test_numbers_python_cannot_take_and_deep_values_in_any_field_are_refused_with_a_code(field, raw):
    # Given a request with an integer of more than 4300 digits, a float beyond 1.8e308 or a deep value in one field
    payload = _with_field("r1", field, raw)
    # When it is decoded, Then it is a request or a RequestError, never another exception (json.loads raises
    # ValueError for the integer, which once went unanswered and unacknowledged)
    _decode_or_refuse(payload)
    if raw in HUGE_INTS:
        with pytest.raises(RequestError) as info:
            decode_request(payload, **{**LIMITS, "max_payload_bytes": 1 << 20})
        assert info.value.code == ErrorCode.BAD_JSON.value


FUZZ_INPUTS = 3000
#: Requests the fuzzer has outstanding at most: a client on a broker with Mosquitto's default limits (1000 queued
#: per client) paces itself by the replies, or the broker drops what it cannot queue.
WINDOW = 100


@pytest.fixture(scope="module")
def logging_broker(tmp_path_factory):  # type: ignore[no-untyped-def]
    """A Mosquitto with its default limits that logs every packet, so PUBLISHes to and PUBACKs from the service
    can be counted."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    with Mosquitto(tmp_path_factory.mktemp("fuzz-mq"), extra="log_type all\n") as mq:
        yield mq


def _fuzz_pass(c: Client, request_topic: str, reply_topic: str, count: int, seed: int, limit: int) -> Counter[str]:
    """Publish ``count`` inputs, check each gets exactly one reply echoing its id where usable; tally the outcomes."""
    meta = []
    replies = []
    for i, (kind, payload, expected_id) in enumerate(fuzz_inputs(count, seed=seed)):
        # an oversized payload is refused unread, before its id is decoded
        meta.append((kind, None if len(payload) > limit else expected_id))
        while i - len(replies) >= WINDOW:
            replies.append(c.get(30))
        c.publish(request_topic, payload, response_topic=reply_topic, correlation_data=str(i).encode(),
                  wait=i % 50 == 49)
    replies += [c.get(30) for _ in range(len(meta) - len(replies))]
    assert _drain(c) == [], "more replies than requests"
    by_corr = Counter(int(r.correlation_data) for r in replies)
    assert sorted(by_corr) == list(range(count)) and set(by_corr.values()) == {1}
    kinds: Counter[str] = Counter()
    for r in replies:
        body = r.json()
        kind, expected_id = meta[int(r.correlation_data)]
        if "error" in body:
            assert body["error"]["code"] in CODES
            kinds[f"{kind}:{body['error']['code']}"] += 1
        else:
            kinds[f"{kind}:ok"] += 1
        if expected_id is not None:
            assert body["id"] == expected_id, (kind, body)
    assert not any(k.endswith(":internal") for k in kinds), kinds
    return kinds


def test_fuzzing_the_service_over_the_broker(logging_broker, tiny_bundle, tmp_path, record_property):
    import psutil

    broker = logging_broker
    # Given the service as its own process on a real broker with Mosquitto's default limits, and a client that tags
    # every input with its own correlation data
    thing = f"fuzz-{FUZZ_INPUTS}"
    topics = Topics.for_thing(thing)
    mine = topics.response + "/fuzz"
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "serve", "--bundle", str(tiny_bundle[0].root),
                             "--thing", thing, "--broker", broker.url, "--backend", "onnxruntime", "--threads", "1"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with Client(broker.url, f"fuzzer-{thing}", [topics.response + "/#"]) as c:
            for n in range(60):  # until the service has subscribed
                c.publish(topics.request, {"id": f"warm-{n}", "text": "play jazz"}, response_topic=mine)
                try:
                    c.get(0.5, topic=mine)
                    break
                except TimeoutError:
                    continue
            _drain(c)
            # When two passes of hostile inputs are published (QoS 1, bounded bursts)
            t0 = time.perf_counter()
            half = FUZZ_INPUTS // 2
            kinds = _fuzz_pass(c, topics.request, mine, half, 8, 65536)
            rss_warm = psutil.Process(proc.pid).memory_info().rss / 2**20
            kinds += _fuzz_pass(c, topics.request, mine, FUZZ_INPUTS - half, 9, 65536)
            rss_end = psutil.Process(proc.pid).memory_info().rss / 2**20
            elapsed = time.perf_counter() - t0
            # Then (checked in each pass) every input got exactly one reply, an answer or a known error code,
            # and the service is still up and right
            c.publish(topics.request, {"id": "after", "text": "play jazz"}, response_topic=mine)
            assert c.get(10, topic=mine).json()["id"] == "after"
            assert proc.poll() is None
            # and its memory after the first pass (warm) does not keep growing in the second
            growth = rss_end - rss_warm
            assert growth < 16, f"service RSS grew {growth:.1f} MB in the second pass ({rss_warm:.0f} MB warm)"
            # and the broker sent each message to the service once and got exactly one PUBACK for each
            client_id = ServiceConfig(bundle=str(tiny_bundle[0].root), thing=thing, broker=broker.url).mqtt_client_id
            sent, acked = _settled_counts(broker, client_id)
            assert sent == acked and sent >= FUZZ_INPUTS + 1, (sent, acked)
            assert f"Sending PUBLISH to {client_id} (d1" not in broker.log.read_text(errors="replace")
            record_property("fuzz_inputs", FUZZ_INPUTS)
            print(f"\nfuzz: {FUZZ_INPUTS} inputs in {elapsed:.1f} s, 0 crashes; {sent} PUBLISHes to the service, "
                  f"{acked} PUBACKs, 0 redeliveries; service RSS {rss_warm:.1f} MB after pass 1, {rss_end:.1f} MB "
                  f"after pass 2 ({growth:+.1f} MB); {dict(sorted(kinds.items()))}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            log.close()


def _settled_counts(broker: Mosquitto, client_id: str) -> tuple[int, int]:
    """The broker's counts once its log has caught up (it writes the last PUBACKs a moment after the replies)."""
    counts = broker.delivery_counts(client_id)
    for _ in range(50):
        time.sleep(0.1)
        latest = broker.delivery_counts(client_id)
        if latest == counts and latest[0] == latest[1]:
            break
        counts = latest
    return counts


def _drain(c: Client, seconds: float = 0.5) -> list:
    extra = []
    try:
        while True:
            extra.append(c.get(seconds))
    except TimeoutError:
        return extra


@pytest.mark.slow
def test_fuzzing_the_service_at_length(logging_broker, tiny_bundle, tmp_path):
    """The same run with 100,000 inputs (``--run-slow``; a few minutes on 2 cores)."""
    global FUZZ_INPUTS
    FUZZ_INPUTS, old = 100_000, FUZZ_INPUTS
    try:
        test_fuzzing_the_service_over_the_broker(logging_broker, tiny_bundle, tmp_path, lambda *a: None)
    finally:
        FUZZ_INPUTS = old
