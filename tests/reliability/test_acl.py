"""Mutual TLS plus a topic ACL: a device (certificate CN = thing name) can touch only its own <thing> topics."""

from __future__ import annotations

import time

import pytest

from edge_runtime.service.protocol import Topics
from tests.edge_runtime.service.broker import MOSQUITTO, OPENSSL, Client, Mosquitto, make_tls_files
from tests.edge_runtime.service.conftest import make_config
from tests.reliability.helpers import acl_config, client_cert, serve

pytestmark = pytest.mark.skipif(MOSQUITTO is None or OPENSSL is None, reason="needs mosquitto and openssl")


def _nothing(client: Client, seconds: float) -> list:
    got = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            got.append(client.get(max(0.01, deadline - time.monotonic())))
        except TimeoutError:
            break
    return got


def test_another_device_cannot_read_replies_or_inject_requests_for_a_thing(tmp_path, tiny_bundle, clf):
    # Given a broker that requires client certificates and applies the per-thing ACL
    tls = make_tls_files(tmp_path / "tls")
    ids = {cn: client_cert(tls, cn) for cn in ("thing-a", "thing-b", "app-thing-a")}
    with Mosquitto(tmp_path / "mq", tls=tls, extra=acl_config(tmp_path / "mq", ["thing-a", "thing-b"])) as mq:
        # and the service of thing-a, connected with its own certificate
        a = ids["thing-a"]
        cfg = make_config(tiny_bundle[0].root, thing="thing-a", broker=mq.url, ca=str(a.ca), cert=str(a.client_cert),
                          key=str(a.client_key), require_mtls=True, status_interval_s=3600.0)
        topics = Topics.for_thing("thing-a")
        service = serve(cfg, clf)
        try:
            with Client(mq.url, "app-a", [topics.response + "/#"], tls=ids["app-thing-a"]) as app, \
                    Client(mq.url, "rogue-b", [topics.response + "/#", topics.request, "#"], tls=ids["thing-b"]) as rogue:
                # When thing-a's app asks, it gets its reply
                app.publish(topics.request, {"id": "legit", "text": "play jazz"}, wait=True)
                assert app.get(10, topic=topics.response).json()["id"] == "legit"
                # Then thing-b, subscribed to thing-a's replies, its requests and '#', saw none of it
                assert _nothing(rogue, 1.0) == []
                received = service.status()["counters"]["received"]
                # When thing-b injects requests for thing-a (default reply topic, and one of its own)
                rogue.publish(topics.request, {"id": "inject-1", "text": "play jazz"}, wait=True)
                rogue.publish(topics.request, {"id": "inject-2", "text": "play jazz"},
                              response_topic="cmd/intents/thing-b/response", wait=True)
                # Then thing-a's service never receives them, and nobody gets a reply
                assert _nothing(app, 1.0) == [] and _nothing(rogue, 0.2) == []
                assert service.status()["counters"]["received"] == received
                # and thing-a's own traffic still flows
                app.publish(topics.request, {"id": "still", "text": "play jazz"}, wait=True)
                assert app.get(10, topic=topics.response).json()["id"] == "still"
                assert _nothing(rogue, 0.5) == []
        finally:
            service.drain(5)


def test_a_device_certificate_cannot_serve_another_thing(tmp_path, tiny_bundle, clf):
    # Given thing-b's certificate used to serve thing-a's topics
    tls = make_tls_files(tmp_path / "tls")
    b, app = client_cert(tls, "thing-b"), client_cert(tls, "app-thing-a")
    with Mosquitto(tmp_path / "mq", tls=tls, extra=acl_config(tmp_path / "mq", ["thing-a"])) as mq:
        cfg = make_config(tiny_bundle[0].root, thing="thing-a", broker=mq.url, ca=str(b.ca), cert=str(b.client_cert),
                          key=str(b.client_key), client_id="impostor", status_interval_s=3600.0)
        topics = Topics.for_thing("thing-a")
        service = serve(cfg, clf)
        try:
            with Client(mq.url, "app-a", [topics.response + "/#"], tls=app) as c:
                # When the app sends a request to thing-a
                c.publish(topics.request, {"id": "x", "text": "play jazz"}, wait=True)
                # Then the impostor never gets it, so no reply comes
                assert _nothing(c, 1.5) == []
                assert service.status()["counters"]["received"] == 0
        finally:
            service.drain(5)
