"""The service through a real Mosquitto: replies, batch-independent answers, persistent session, reconnect, mTLS."""

from __future__ import annotations

import getpass
import threading
import time

import pytest

from edge_runtime.service import IntentService
from edge_runtime.service.protocol import Topics
from edge_runtime.service.runner import make_transport
from tests.edge_runtime.service.broker import OPENSSL, Client, Mosquitto, make_tls_files
from tests.edge_runtime.service.conftest import make_config

TEXTS = ["play some jazz", "book a table for two tonight", "will it snow in new york tomorrow",
         "add this song to my playlist", "rate this novel five stars", "find the movie schedule",
         "search for the album", "play music by miles davis", "what is the weather in the city",
         "show the film at the cinema", "book a restaurant for four people", "rate the book three stars"]


def _serve(cfg, clf):  # type: ignore[no-untyped-def]
    transport = make_transport(cfg)
    service = IntentService(cfg, clf, transport).start()
    assert transport.wait_connected(10), "the service did not connect"
    return service


def test_requests_replies_and_errors_travel_through_the_broker(broker, tiny_bundle, clf):
    # Given the service connected to a real broker, and a client
    cfg = make_config(tiny_bundle[0].root, broker=broker.url, status_interval_s=3600.0)
    topics = Topics.for_thing(cfg.thing)
    service = _serve(cfg, clf)
    try:
        # ("response/#" also matches "response" itself)
        with Client(broker.url, f"client-{cfg.thing}", [topics.response + "/#", topics.status]) as c:
            # Then the retained status says online
            assert c.get(10, topic=topics.status).json()["state"] == "online"
            # When a request and a malformed one are published
            c.publish(topics.request, {"id": "r1", "text": "play some jazz"})
            assert c.get(10, topic=topics.response).json()["intent"] == clf.predict("play some jazz").intent
            c.publish(topics.request, b"not json at all")
            assert c.get(10, topic=topics.response).json()["error"]["code"] == "bad_json"
            # and one with an MQTT 5 response topic and correlation data
            mine = topics.response + "/my-app"
            c.publish(topics.request, {"id": "r2", "texts": ["a", "b"]}, response_topic=mine, correlation_data=b"42")
            reply = c.get(10, topic=mine)
            assert reply.json()["id"] == "r2" and len(reply.json()["results"]) == 2 and reply.correlation_data == b"42"
    finally:
        service.drain(5)


@pytest.mark.parametrize("workers", [1, 2])
def test_an_answer_does_not_depend_on_what_shares_its_batch_through_the_broker(broker, tiny_bundle, clf, workers):
    # Given the service with a batch window (and one or two model workers), and four clients that fire bursts at once
    cfg = make_config(tiny_bundle[0].root, broker=broker.url, batch_window_ms=5.0, max_batch=16,
                      status_interval_s=3600.0, workers=workers)
    topics = Topics.for_thing(cfg.thing)
    service = _serve(cfg, clf)
    expected = {t: clf.predict(t) for t in TEXTS}
    clients = [Client(broker.url, f"burst-{i}-{cfg.thing}", [f"{topics.response}/c{i}"]) for i in range(4)]
    try:
        def burst(i: int) -> None:
            for j in range(40):
                text = TEXTS[(i * 7 + j) % len(TEXTS)]
                clients[i].publish(topics.request, {"id": f"{i}-{j}", "text": text}, response_topic=f"{topics.response}/c{i}")

        threads = [threading.Thread(target=burst, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # When every reply is in
        for i, client in enumerate(clients):
            replies = client.collect(40, 10)
            # Then each text got exactly the answer it gets alone
            for r in replies:
                i_, j = map(int, r.json()["id"].split("-"))
                single = expected[TEXTS[(i_ * 7 + j) % len(TEXTS)]]
                assert r.json()["intent"] == single.intent
                assert r.json()["confidence"] == pytest.approx(single.confidence, abs=2e-6)
                assert [t["intent"] for t in r.json()["top"]] == [label for label, _ in single.top]
            # and each client got its replies in the order it sent its requests
            assert [int(r.json()["id"].split("-")[1]) for r in replies] == list(range(40))
        # and texts really were batched together
        assert service.status()["counters"]["largest_batch"] > 1
    finally:
        for client in clients:
            client.close()
        service.drain(5)


def test_requests_sent_while_the_service_is_away_are_answered_when_it_returns(broker, tiny_bundle, clf):
    # Given a service that connected once (its session and subscription live on in the broker), then left
    cfg = make_config(tiny_bundle[0].root, broker=broker.url, status_interval_s=3600.0)
    topics = Topics.for_thing(cfg.thing)
    _serve(cfg, clf).drain(5)
    with Client(broker.url, f"client-{cfg.thing}", [topics.response]) as c:
        # When requests are published while it is away
        for i in range(5):
            c.publish(topics.request, {"id": f"away-{i}", "text": "play jazz"}, wait=True)
        # and it comes back with the same client id
        service = _serve(cfg, clf)
        try:
            # Then the broker delivers them and each gets its reply
            assert sorted(r.json()["id"] for r in c.collect(5, 10)) == [f"away-{i}" for i in range(5)]
        finally:
            service.drain(5)


def test_the_service_reconnects_after_the_broker_restarts(tmp_path, tiny_bundle, clf):
    first = Mosquitto(tmp_path / "first").start()
    port = first.port
    cfg = make_config(tiny_bundle[0].root, broker=first.url, reconnect_min_s=1, reconnect_max_s=2,
                      status_interval_s=3600.0)
    topics = Topics.for_thing(cfg.thing)
    service = _serve(cfg, clf)
    try:
        connections = service.transport.connections
        # When the broker goes away and comes back on the same port
        first.stop()
        second = Mosquitto(tmp_path / "second")
        _start_on(second, port)
        try:
            deadline = time.monotonic() + 20
            while service.transport.connections == connections and time.monotonic() < deadline:
                time.sleep(0.1)
            # Then the service is connected and subscribed again, and answers
            assert service.transport.connections > connections
            with Client(second.url, f"client-{cfg.thing}", [topics.response]) as c:
                c.publish(topics.request, {"id": "back", "text": "play jazz"})
                assert c.get(10, topic=topics.response).json()["id"] == "back"
        finally:
            service.drain(5)
            second.stop()
    finally:
        first.stop()


def _start_on(mq: Mosquitto, port: int) -> None:
    """Start ``mq`` on a given port (the broker that 'comes back')."""
    import subprocess

    from tests.edge_runtime.service.broker import MOSQUITTO, wait_port

    mq.workdir.mkdir(parents=True, exist_ok=True)
    mq.port = port
    conf = mq.workdir / "mosquitto.conf"
    conf.write_text(f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "set_tcp_nodelay true\n")
    for _ in range(50):
        mq.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        if wait_port(port, 2, mq.proc) and mq.proc.poll() is None:
            return
        mq.stop()
        time.sleep(0.1)
    raise RuntimeError(f"could not restart mosquitto on port {port}")


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_mutual_tls_with_ca_cert_and_key(tmp_path, tiny_bundle, clf):
    # Given a broker that requires client certificates signed by the test CA
    tls = make_tls_files(tmp_path / "tls")
    with Mosquitto(tmp_path / "mq", tls=tls) as mq:
        assert mq.url.startswith("mqtts://")
        # When the service connects with --ca --cert --key
        cfg = make_config(tiny_bundle[0].root, broker=mq.url, ca=str(tls.ca), cert=str(tls.client_cert),
                          key=str(tls.client_key), status_interval_s=3600.0)
        topics = Topics.for_thing(cfg.thing)
        service = _serve(cfg, clf)
        try:
            # Then it serves over TLS
            with Client(mq.url, f"client-{cfg.thing}", [topics.response], tls=tls) as c:
                c.publish(topics.request, {"id": "tls", "text": "play jazz"})
                assert c.get(10, topic=topics.response).json()["id"] == "tls"
            # and a client without a certificate is turned away
            with pytest.raises((TimeoutError, OSError)):
                Client(mq.url, "no-cert", [], tls=tls, with_cert=False, timeout=1.5)
        finally:
            service.drain(5)


def test_broker_urls_and_misuse_are_refused_clearly(monkeypatch):
    import sys

    from edge_runtime.service.errors import TransportClosedError, TransportError, TransportUnavailableError
    from edge_runtime.service.transports.mqtt import MqttTransport, parse_broker_url

    assert parse_broker_url("mqtt://broker.local") == (False, "broker.local", 1883)
    assert parse_broker_url("mqtts://abc-ats.iot.eu-west-1.amazonaws.com") == (
        True, "abc-ats.iot.eu-west-1.amazonaws.com", 8883)
    with pytest.raises(TransportError, match="mqtt://HOST"):
        parse_broker_url("tcp://x:1")
    with pytest.raises(TransportError, match="mqtts://"):
        MqttTransport("mqtt://x", client_id="c", subscribe="t", ca="ca.pem")
    transport = MqttTransport("mqtt://127.0.0.1:1", client_id="c", subscribe="t")
    with pytest.raises(TransportError, match="not started"):
        transport.publish("t", b"x")
    transport.close()
    with pytest.raises(TransportClosedError):
        transport.publish("t", b"x")
    monkeypatch.setitem(sys.modules, "paho", None)
    monkeypatch.setitem(sys.modules, "paho.mqtt", None)
    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)
    with pytest.raises(TransportUnavailableError, match=r"slm-intents\[mqtt\]"):
        MqttTransport("mqtt://127.0.0.1:1", client_id="c", subscribe="t").start(lambda m: None)
