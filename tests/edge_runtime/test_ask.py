"""``python -m edge_runtime ask`` against the real service on a real Mosquitto (loopback only)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge_runtime.cli import main
from edge_runtime.service.protocol import Topics
from tests.edge_runtime.service.broker import MOSQUITTO, OPENSSL, Client, Mosquitto

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)")
THING = "ask-thing"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):  # type: ignore[no-untyped-def]
    with Mosquitto(tmp_path_factory.mktemp("mosquitto")) as mq:
        yield mq


@pytest.fixture(scope="module")
def service(broker, tiny_bundle):  # type: ignore[no-untyped-def]
    """The intent service for THING on the broker (its own MQTT transport), texts of at most 40 characters."""
    from edge_runtime import IntentClassifier
    from edge_runtime.service import IntentService
    from edge_runtime.service.config import ServiceConfig
    from edge_runtime.service.runner import make_transport

    cfg = ServiceConfig(bundle=str(tiny_bundle[0].root), thing=THING, broker=broker.url, max_text_chars=40,
                        status_interval_s=3600.0)
    with IntentClassifier.from_bundle(tiny_bundle[0].root, backend="onnxruntime", threads=1) as clf:
        transport = make_transport(cfg)
        svc = IntentService(cfg, clf, transport).start()
        assert transport.wait_connected(10), "the service did not connect"
        _wait_online(broker.url)
        yield svc
        svc.drain(5)


def _wait_online(url: str, **tls) -> None:
    """Until the service's retained status is there: it is published after its SUBSCRIBE, so requests reach it."""
    with Client(url, "ask-test-watch", [Topics.for_thing(THING).status], **tls) as watch:
        assert watch.get(10).json()["state"] == "online"


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_each_text_gets_its_reply_as_one_json_line_on_the_requesters_own_topic(service, broker, capsys):
    # Given the service, and someone listening on the thing's default reply topic
    with Client(broker.url, "bystander", [Topics.for_thing(THING).response]) as bystander:
        # When two texts are asked
        rc = main(["ask", "--broker", broker.url, "--thing", THING, "--client-id", "phone-app",
                   "play some jazz music", "rate this book five stars"])
        # Then each reply is printed, exit 0
        out = capsys.readouterr().out
        replies = _lines(out)
        assert rc == 0 and len(replies) == 2
        assert all(r["intent"] and r["model"] == {"name": "tiny", "version": "1"} for r in replies)
        assert len({r["id"] for r in replies}) == 2
        # and they went to the requester's own MQTT 5 response topic, not the shared one
        with pytest.raises(TimeoutError):
            bystander.get(0.5)


def test_the_default_reply_topic_works_too(service, broker, capsys):
    rc = main(["ask", "--broker", broker.url, "--thing", THING, "--default-reply-topic", "play some jazz"])
    (reply,) = _lines(capsys.readouterr().out)
    assert rc == 0 and reply["intent"]


def test_an_error_reply_is_printed_and_exits_1(service, broker, capsys):
    # Given a text over the service's 40-character limit next to a good one
    rc = main(["ask", "--broker", broker.url, "--thing", THING, "x" * 41, "play some jazz"])
    replies = _lines(capsys.readouterr().out)
    # Then both replies are printed, the error one as the service sent it, and the exit status is 1
    assert rc == 1 and len(replies) == 2
    (error,) = [r for r in replies if "error" in r]
    assert error["error"]["code"] == "text_too_long"


def test_no_service_is_a_timeout_with_exit_3(broker, capsys):
    # Given a thing no service serves, When asked with a 1 s timeout
    rc = main(["ask", "--broker", broker.url, "--thing", "nobody-home", "--timeout", "1", "play some jazz"])
    # Then nothing is printed as a reply, the reason goes to stderr, and the exit status is 3
    captured = capsys.readouterr()
    assert rc == 3 and captured.out == "" and "no reply to 1 of 1 request(s) within 1 s" in captured.err


def test_a_broker_that_is_not_there_is_exit_2_with_the_reason(capsys):
    from tests.edge_runtime.service.broker import free_port

    rc = main(["ask", "--broker", f"mqtt://127.0.0.1:{free_port()}", "--thing", THING, "play"])
    assert rc == 2 and "cannot connect" in capsys.readouterr().err


def test_paho_is_imported_only_by_the_handler_and_its_absence_names_the_extra(capsys, monkeypatch):
    # importing the CLI and the ask module loads no MQTT client
    code = "import sys, edge_runtime.cli, edge_runtime.ask; sys.exit('paho' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
    # without paho-mqtt the command says which extra to install
    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)
    rc = main(["ask", "--broker", "mqtt://127.0.0.1:1", "--thing", THING, "play"])
    assert rc == 2 and "pip install 'slm-intents[mqtt]'" in capsys.readouterr().err


@pytest.mark.skipif(OPENSSL is None, reason="needs openssl")
def test_mutual_tls_with_ca_cert_and_key(tmp_path, tiny_bundle, capsys):
    # Given a broker that requires client certificates, and the service connected to it over mutual TLS
    from edge_runtime import IntentClassifier
    from edge_runtime.service import IntentService
    from edge_runtime.service.config import ServiceConfig
    from edge_runtime.service.runner import make_transport
    from tests.edge_runtime.service.broker import make_tls_files

    tls = make_tls_files(tmp_path / "tls")
    files = ["--ca", str(tls.ca), "--cert", str(tls.client_cert), "--key", str(tls.client_key)]
    with Mosquitto(tmp_path / "mq", tls=tls) as mq, \
            IntentClassifier.from_bundle(tiny_bundle[0].root, backend="onnxruntime", threads=1) as clf:
        cfg = ServiceConfig(bundle=str(tiny_bundle[0].root), thing=THING, broker=mq.url, ca=str(tls.ca),
                            cert=str(tls.client_cert), key=str(tls.client_key), require_mtls=True,
                            status_interval_s=3600.0)
        transport = make_transport(cfg)
        svc = IntentService(cfg, clf, transport).start()
        try:
            assert transport.wait_connected(10)
            _wait_online(mq.url, tls=tls)
            # When asked with the CA, certificate and key, Then the reply comes back
            rc = main(["ask", "--broker", mq.url, "--thing", THING, *files, "play some jazz"])
            assert rc == 0 and _lines(capsys.readouterr().out)[0]["intent"]
            # and without the client certificate the broker refuses: exit 2 with the reason
            rc = main(["ask", "--broker", mq.url, "--thing", THING, "--ca", str(tls.ca), "--timeout", "3", "x"])
            assert rc == 2 and "error:" in capsys.readouterr().err
        finally:
            svc.drain(5)
