"""The local deployment smoke test: both components installed and run as the recipes say, against a real Mosquitto.

Greengrass' nucleus cannot run here, so :class:`LocalNucleus` does what ``greengrass-cli deployment create`` of
both components does on a device: unpack the artifacts, substitute the recipe variables, run ``install`` (a fresh
venv, the pinned requirements, the wheel) and ``run`` in a fresh root. A real MQTT client then checks replies,
status, latency and the service's RSS; everything is stopped by PID.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time

import psutil
import pytest

from edge_runtime.bench.runner import load_budgets
from edge_runtime.service.protocol import Topics
from tests.conftest import LABELS
from tests.edge_runtime.service.broker import MOSQUITTO, Client, Mosquitto
from tests.greengrass.local_nucleus import GG_ARCH, LocalNucleus

pytestmark = [pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)"),
              pytest.mark.skipif(not GG_ARCH, reason="no Greengrass manifest for this architecture")]

THING = "smoke-thing"
#: Round-trip p50 the smoke test insists on (the tiny model; the full bench target for MiniLM is 3 ms).
SMOKE_P50_MS = 10.0
#: Service RSS allowance over the bench budget's peak RSS: the MQTT client, the worker threads and psutil.
SERVICE_RSS_EXTRA_MB = 20.0


def _stop(proc: subprocess.Popen[bytes], log_path, timeout: float = 20.0) -> int:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGUSR1)  # the service dumps every thread's stack into its log
            time.sleep(1.0)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
            pytest.fail(f"the service did not stop within {timeout} s of SIGTERM:\n{log_path.read_text()[-6000:]}")
    return proc.returncode


def test_both_components_install_run_and_answer_over_a_real_broker(built, tmp_path):
    # Given both components built from registry version 1, a Mosquitto on a free loopback port,
    # and a fresh Greengrass root holding the deployment (transport switched to the local broker)
    model, app = built.component("model"), built.component("app")
    topics = Topics.for_thing(THING)
    with Mosquitto(tmp_path / "mosquitto") as broker:
        nucleus = LocalNucleus(tmp_path / "greengrass" / "v2", THING)
        recipes, artifacts = built.out / "recipes", built.out / "artifacts"
        model_c = nucleus.deploy(recipes, artifacts, model["name"], model["version"])
        app_c = nucleus.deploy(recipes, artifacts, app["name"], app["version"], config={
            "Transport": "mqtt", "Broker": broker.url, "StatusIntervalS": 1, "Threads": 1, "Python": sys.executable,
            "MaxTextChars": 100})

        # When the install steps run (model first: the app has a HARD dependency on it) and the app is started
        nucleus.install(model_c)
        assert (model_c.work / "bundle" / "manifest.json").is_file()
        nucleus.install(app_c)
        with Client(broker.url, "smoke-client", [topics.status, topics.response]) as client:
            proc = nucleus.start(app_c, tmp_path / "service.log")
            try:
                online = _wait_status(client, "online", proc, tmp_path)
                # Then the status names the model and backend
                assert online["model"] == {"name": "tiny", "version": "1"} and online["backend"] == "onnxruntime"

                # and every request gets its reply, fast
                latencies = []
                for i in range(60):
                    sent = client.publish(topics.request, {"id": f"r{i}", "text": "play some jazz music"})
                    reply = client.get(10, topic=topics.response)
                    latencies.append((reply.at - sent) * 1000)
                    body = reply.json()
                    assert body["id"] == f"r{i}" and body["intent"] in LABELS and body["model"]["version"] == "1"
                p50 = statistics.median(latencies[10:])
                assert p50 <= SMOKE_P50_MS, f"round-trip p50 {p50:.2f} ms"

                # and a text over the configured limit gets the configured error, the service staying up
                client.publish(topics.request, {"id": "long", "text": "x" * 101})
                assert client.get(10, topic=topics.response).json()["error"]["code"] == "text_too_long"
                client.publish(topics.request, {"id": "batch", "texts": ["play jazz", "book a table for two"]})
                assert len(client.get(10, topic=topics.response).json()["results"]) == 2

                # and the periodic status counts them
                status = _wait_status(client, "online", proc, tmp_path, min_replied=61)
                assert status["counters"]["errors_by_code"] == {"text_too_long": 1}

                # and the service's memory stays within the budget
                rss_mb = psutil.Process(proc.pid).memory_info().rss / 2**20
                budget = load_budgets()["x86-ci"]["max"]["peak_rss_mb"] + SERVICE_RSS_EXTRA_MB
                assert rss_mb <= budget, f"service RSS {rss_mb:.0f} MB > {budget} MB"
            finally:
                code = _stop(proc, tmp_path / "service.log")
            # Then SIGTERM drains and exits 0, and the last status says offline
            assert code == 0, (tmp_path / "service.log").read_text()[-3000:]
            assert _wait_status(client, "offline", None, tmp_path)["state"] == "offline"
    print(f"\nsmoke: round-trip p50 {p50:.2f} ms, p95 {statistics.quantiles(latencies[10:], n=20)[-1]:.2f} ms, "
          f"service RSS {rss_mb:.0f} MB")


def _wait_status(client: Client, state: str, proc: subprocess.Popen[bytes] | None, tmp_path, *, min_replied: int = 0,
                 timeout: float = 60.0) -> dict:
    topic = Topics.for_thing(THING).status
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"service exited with {proc.returncode}:\n{(tmp_path / 'service.log').read_text()[-3000:]}")
        try:
            status = json.loads(client.get(1.0, topic=topic).payload)
        except TimeoutError:
            continue
        if status["state"] == state and status.get("counters", {}).get("replied", 0) >= min_replied:
            return status
    pytest.fail(f"no {state!r} status within {timeout} s")


def _reply(client: Client, request_id: str, text: str = "play some jazz music") -> dict:
    topics = Topics.for_thing(THING)
    client.publish(topics.request, {"id": request_id, "text": text})
    while True:
        body = client.get(10, topic=topics.response).json()
        if body.get("id") == request_id:
            return body


def test_a_signed_bundle_is_served_and_a_tampered_one_is_refused_while_the_old_model_serves(tmp_path, wheel,
                                                                                          signing_keys):
    # Given registry version 1 (unsigned: the build signs it) and version 2, which someone without the key made:
    # signed once, then its model and manifest replaced (every sha256 right, the signature stale)
    from cloud.greengrass import build_components
    from tests.greengrass.conftest import register_tiny

    private, _ = signing_keys
    store, v1 = register_tiny(tmp_path / "store")
    _, v2 = register_tiny(store, signed_with=private, tampered=True)
    good = build_components(v1, store=store, out=tmp_path / "build-1", wheel=wheel, sign_key=private)
    bad = build_components(v2, store=store, out=tmp_path / "build-2", wheel=wheel)
    key_b64 = good.registry["bundle"]["signature"]["public_key_b64"]
    topics = Topics.for_thing(THING)
    with Mosquitto(tmp_path / "mosquitto") as broker:
        nucleus = LocalNucleus(tmp_path / "greengrass" / "v2", THING)
        model, app = good.component("model"), good.component("app")
        model_c = nucleus.deploy(good.out / "recipes", good.out / "artifacts", model["name"], model["version"])
        # the security settings arrive as component configuration, as a deployment would merge them
        config = {"Transport": "mqtt", "Broker": broker.url, "StatusIntervalS": 1, "Threads": 1,
                  "Python": sys.executable, "BundlePollS": 0.2, "BundlePublicKey": key_b64}
        app_c = nucleus.deploy(good.out / "recipes", good.out / "artifacts", app["name"], app["version"], config=config)
        nucleus.install(model_c)
        nucleus.install(app_c)
        log = tmp_path / "service.log"
        with Client(broker.url, "sig-client", [topics.status, topics.response]) as client:
            proc = nucleus.start(app_c, log)
            try:
                # When the signed version 1 is deployed, then it is verified and served
                online = _wait_status(client, "online", proc, tmp_path)
                assert online["model"] == {"name": "tiny", "version": "1"}
                assert (app_c.work / "bundle-public-key").read_text().strip() == key_b64
                assert _reply(client, "s1")["model"]["version"] == "1"

                # When the tampered version 2 is deployed (its install relinks the model the service watches)
                m2 = bad.component("model")
                nucleus.install(nucleus.deploy(bad.out / "recipes", bad.out / "artifacts", m2["name"], m2["version"]))
                deadline = time.monotonic() + 20
                while "refused" not in log.read_text() and time.monotonic() < deadline:
                    time.sleep(0.1)
                # Then the service refuses it and version 1 keeps answering
                assert "refused" in log.read_text(), log.read_text()[-3000:]
                assert _reply(client, "s2")["model"]["version"] == "1"
                # and a restart on it (what the nucleus does for a HARD dependency) refuses to start at all
                restarted = nucleus.start(app_c, tmp_path / "restart.log")
                assert restarted.wait(60) != 0
                assert "signature" in (tmp_path / "restart.log").read_text().lower()
                assert _reply(client, "s3")["model"]["version"] == "1"
            finally:
                _stop(proc, log)

        # and RequireMtls reaches the service too: over a plain mqtt:// broker it refuses to start
        strict = nucleus.deploy(good.out / "recipes", good.out / "artifacts", app["name"], app["version"],
                                config={**config, "RequireMtls": True})
        refused = nucleus.start(strict, tmp_path / "mtls.log")
        assert refused.wait(60) != 0
        assert "require_mtls" in (tmp_path / "mtls.log").read_text()
