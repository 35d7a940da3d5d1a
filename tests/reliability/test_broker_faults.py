"""Faults around the broker: restarted during load (QoS 1 + persistent sessions: every request answered, at least
once, with no service restart), and a service killed (SIGKILL) or stopped (SIGTERM) during work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from edge_runtime.service.protocol import Topics
from tests.edge_runtime.service.broker import MOSQUITTO
from tests.edge_runtime.service.conftest import make_config
from tests.reliability.helpers import PersistentBroker, PersistentClient, serve

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")
REQUESTS = 600


def _wait_all(client: PersistentClient, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with client.lock:
            if all(i in client.replies for i in ids):
                break
        time.sleep(0.05)
    time.sleep(0.5)  # late duplicates would show up here


def test_a_broker_restart_during_load_loses_no_request_and_needs_no_service_restart(tmp_path, tiny_bundle, clf):
    # Given a broker with persistence, the service (persistent session) and a requester (persistent session)
    mq = PersistentBroker(tmp_path / "mq").start()
    try:
        cfg = make_config(tiny_bundle[0].root, broker=mq.url, reconnect_min_s=1, reconnect_max_s=1,
                          status_interval_s=3600.0)
        topics = Topics.for_thing(cfg.thing)
        service = serve(cfg, clf)
        requester = PersistentClient(mq.url, f"req-{cfg.thing}", topics.response)
        try:
            # (the service's first subscription may still be on its way: a request before it has nobody to go to)
            assert any(requester.request(topics.request, f"hello-{n}", "play jazz") and
                       _wait(requester, f"hello-{n}", 1) for n in range(30))
            ids = [f"r{i}" for i in range(REQUESTS)]

            def load() -> None:
                for i, rid in enumerate(ids):
                    requester.request(topics.request, rid, "play some jazz")
                    time.sleep(0.004)

            sender = threading.Thread(target=load)
            sender.start()
            # When the broker stops mid-load and comes back a second later on the same port
            time.sleep(0.8)
            mq.stop(signal.SIGTERM)
            time.sleep(1.0)
            mq.start()
            sender.join(30)
            _wait_all(requester, ids, 40)
            # Then every request got exactly one reply, from the same service object, which reconnected
            with requester.lock:
                missing = [i for i in ids if i not in requester.replies]
                dups = {i: n for i, n in requester.replies.items() if n > 1}
            assert missing == [], f"{len(missing)} requests got no reply"
            # QoS 1 is at-least-once: a request or reply in flight when the broker stopped may be delivered twice
            # (same id, same answer). Exactly-once needs id de-duplication (in the client, or in the service:
            # see docs/reliability.md); here duplicates are bounded by what was in flight.
            assert len(dups) <= 40 and all(n == 2 for n in dups.values()), dups
            assert service.transport.connections >= 2 and requester.connections >= 2 and mq.starts == 2
            assert service.state == "online"
            print(f"\nbroker restart: {REQUESTS} requests, 0 lost, {len(dups)} answered twice, service reconnected "
                  f"{service.transport.connections - 1}x")
        finally:
            requester.close()
            service.drain(5)
    finally:
        mq.stop()


def _serve_process(bundle, url: str, thing: str, log) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    return subprocess.Popen([sys.executable, "-m", "edge_runtime", "serve", "--bundle", str(bundle), "--thing", thing,
                             "--broker", url, "--backend", "onnxruntime", "--threads", "1",
                             "--reconnect-min-s", "1", "--reconnect-max-s", "1"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(client: PersistentClient, rid: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with client.lock:
            if rid in client.replies:
                return True
        time.sleep(0.05)
    return False


def test_sigkill_during_work_then_restart_answers_every_request(tmp_path, tiny_bundle):
    # Given the service as a process under load, with a persistent session
    mq = PersistentBroker(tmp_path / "mq").start()
    thing = "killed-thing"
    topics = Topics.for_thing(thing)
    log = open(tmp_path / "serve.log", "wb")
    proc = _serve_process(tiny_bundle[0].root, mq.url, thing, log)
    requester = PersistentClient(mq.url, "req-killed", topics.response)
    try:
        # (until the service has subscribed, a request has nobody to go to: retry until one is answered)
        assert any(requester.request(topics.request, f"hello-{n}", "play jazz") and _wait(requester, f"hello-{n}", 1)
                   for n in range(30)), (tmp_path / "serve.log").read_text()
        ids = [f"k{i}" for i in range(300)]
        for rid in ids[:150]:
            requester.request(topics.request, rid, "play jazz")
        # When it is killed with SIGKILL mid-stream, more requests arrive while it is gone, and it is restarted
        time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # a supervisor's restart delay (Greengrass, systemd RestartSec): the broker has seen the connection drop
        # before the same client id connects again
        time.sleep(1.0)
        for rid in ids[150:]:
            requester.request(topics.request, rid, "play jazz")
        proc = _serve_process(tiny_bundle[0].root, mq.url, thing, log)
        _wait_all(requester, ids, 40)
        # Then each request was answered (at least once: a reply in flight when it died may be repeated)
        with requester.lock:
            missing = [i for i in ids if i not in requester.replies]
            dups = sum(1 for i in ids if requester.replies.get(i, 0) > 1)
        assert missing == [], f"{len(missing)} lost: {missing[:5]}"
        print(f"\nSIGKILL: 300 requests, 0 lost, {dups} answered twice (at-least-once across a crash)")
        # and SIGTERM drains and exits 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        requester.close()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
        mq.stop()


def test_a_reply_published_while_the_broker_is_away_is_sent_later_and_later_publishes_still_work(tmp_path):
    # Given a transport connected to a broker with persistence
    from edge_runtime.service.transports.mqtt import MqttTransport

    mq = PersistentBroker(tmp_path / "mq").start()
    transport = MqttTransport(mq.url, client_id="away-test", subscribe="cmd/away/request", reconnect_min_s=1,
                              reconnect_max_s=1)
    try:
        transport.start(lambda message: None)
        assert transport.wait_connected(10)
        # When the broker stops, a reply is published meanwhile (paho keeps it: NO_CONN), and the broker comes back
        mq.stop(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while transport.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not transport.connected
        transport.publish("cmd/away/response", b"while away")
        mq.start()
        assert transport.wait_connected(15)
        # Then the next publishes do not fail on the old one, and every message gets acknowledged
        for i in range(3):
            transport.publish("cmd/away/response", f"after {i}".encode())
        deadline = time.monotonic() + 10
        while transport._unacknowledged() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert transport._unacknowledged() == 0
    finally:
        transport.close()
        mq.stop(signal.SIGTERM)
