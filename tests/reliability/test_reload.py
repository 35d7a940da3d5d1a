"""Model update under load: a new bundle is verified, loaded beside the old one and swapped in atomically;
a bundle that fails verification is refused and the old one keeps serving."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest

from edge_runtime import IntentClassifier
from edge_runtime.errors import BundleError, IntegrityError, SignatureError
from edge_runtime.service import IntentService
from edge_runtime.service.protocol import Topics
from edge_runtime.service.reload import BundleReloader, SwappableClassifier
from edge_runtime.service.runner import make_transport
from tests.conftest import build_tiny_bundle
from tests.edge_runtime.service.broker import MOSQUITTO, Client
from tests.edge_runtime.service.conftest import make_config

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")
TEXTS = ["play some jazz", "book a table for two", "will it snow tomorrow", "rate this novel five stars"]


@pytest.fixture(scope="module")
def v2(tmp_path_factory):  # type: ignore[no-untyped-def]
    """A second tiny bundle (other weights, version 2)."""
    return build_tiny_bundle(tmp_path_factory.mktemp("v2") / "bundle", seed=1, version="2")[0]


def test_a_new_bundle_is_swapped_in_under_load_and_bad_ones_are_refused(broker, tiny_bundle, v2, tmp_path):
    # Given the service on v1 through a real broker, under steady load from a client
    v1 = IntentClassifier.from_bundle(tiny_bundle[0].root, backend="onnxruntime", threads=1)
    model = SwappableClassifier(v1)
    cfg = make_config(tiny_bundle[0].root, broker=broker.url, status_interval_s=3600.0)
    topics = Topics.for_thing(cfg.thing)
    transport = make_transport(cfg)
    service = IntentService(cfg, model, transport).start()
    assert transport.wait_connected(10)
    reloader = BundleReloader(model, service=service, backend="onnxruntime", threads=1, staging_dir=str(tmp_path))
    with IntentClassifier.from_bundle(v2.root, backend="onnxruntime", threads=1) as ref2, \
            IntentClassifier.from_bundle(tiny_bundle[0].root, backend="onnxruntime", threads=1) as ref1:
        expected = {"1": {t: ref1.predict(t).intent for t in TEXTS}, "2": {t: ref2.predict(t).intent for t in TEXTS}}
        assert expected["1"] != expected["2"], "the two test models must disagree somewhere"
    sent: list[str] = []
    stop = threading.Event()
    try:
        with Client(broker.url, f"load-{cfg.thing}", [topics.response]) as c:
            def load() -> None:
                i = 0
                while not stop.is_set() and i < 3000:
                    c.publish(topics.request, {"id": f"q{i}", "text": TEXTS[i % len(TEXTS)]})
                    sent.append(f"q{i}")
                    i += 1
                    time.sleep(0.003)

            sender = threading.Thread(target=load)
            sender.start()
            time.sleep(0.5)
            # When a tampered bundle arrives: refused, v1 keeps serving
            bad = tmp_path / "tampered"
            shutil.copytree(v2.root, bad)
            with (bad / "model.onnx").open("r+b") as fh:
                fh.seek(100)
                fh.write(b"\xff\xff")
            with pytest.raises(IntegrityError):
                reloader.load(bad)
            # and one whose labels do not match the model's output size
            wrong = tmp_path / "wrong-labels"
            shutil.copytree(v2.root, wrong)
            manifest = json.loads((wrong / "manifest.json").read_text())
            manifest["labels"] = manifest["labels"][:-1]
            (wrong / "manifest.json").write_text(json.dumps(manifest))
            with pytest.raises(BundleError):
                reloader.load(wrong)
            time.sleep(0.3)
            assert service.model["version"] == "1" and model.swaps == 0 and reloader.refused == 2
            # When the good v2 arrives mid-load
            reloader.load(v2.root)
            time.sleep(0.5)
            stop.set()
            sender.join(10)
            replies = [r.json() for r in c.collect(len(sent), 20, topic=topics.response)]
        # Then every request got exactly one reply, none an error
        assert sorted(r["id"] for r in replies) == sorted(sent) and not any("error" in r for r in replies)
        # and each reply came from exactly the model it names: v1 until the swap, v2 after, never mixed
        by_id = sorted(replies, key=lambda r: int(r["id"][1:]))
        versions = [r["model"]["version"] for r in by_id]
        assert versions == sorted(versions) and set(versions) == {"1", "2"}, "one switch from v1 to v2"
        for r in by_id:
            text = TEXTS[int(r["id"][1:]) % len(TEXTS)]
            assert r["intent"] == expected[r["model"]["version"]][text]
        assert model.swaps == 1 and service.status()["model"]["version"] == "2"
        print(f"\nreload: {len(sent)} requests under load, {versions.count('1')} by v1, {versions.count('2')} by v2, "
              f"2 bad bundles refused, 0 lost")
    finally:
        stop.set()
        service.drain(5)
        model.close()


def test_with_a_key_configured_an_unsigned_update_is_refused(tiny_bundle, v2, tmp_path):
    pytest.importorskip("cryptography")
    from cloud.signing import generate_keypair, sign_bundle

    generate_keypair(tmp_path / "k", tmp_path / "k.pub")
    model = SwappableClassifier(IntentClassifier.from_bundle(tiny_bundle[0].root, backend="onnxruntime", threads=1))
    reloader = BundleReloader(model, public_key=tmp_path / "k.pub", backend="onnxruntime", threads=1,
                              staging_dir=str(tmp_path))
    try:
        with pytest.raises(SignatureError):
            reloader.load(v2.root)
        assert model.predict_batch(["play jazz"]) and model.version == "1"
        signed = tmp_path / "signed"
        shutil.copytree(v2.root, signed)
        sign_bundle(signed, tmp_path / "k")
        reloader.load(signed)
        model.predict_batch(["play jazz"])
        assert model.version == "2"
        # and the staging copies of refused bundles are gone; the serving one stays until it is replaced
        assert len([p for p in tmp_path.iterdir() if p.name.startswith("bundle-update-")]) == 1
    finally:
        model.close()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("bundle-update-")]


def _serve_process(bundle, broker_url: str, thing: str, log, *extra: str):  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_INTENTS_")}
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "edge_runtime", "serve", "--bundle", str(bundle), "--thing", thing,
                                 "--broker", broker_url, "--threads", "1", "--status-interval-s", "0.5",
                                 "--telemetry-interval", "0", *extra],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _versions_seen(client: Client, topics: Topics, wanted: str, timeout: float = 20.0) -> str:
    """Ask until a reply comes from version ``wanted`` (the swap happens at the first batch after the load)."""
    deadline = time.monotonic() + timeout
    i = 0
    while time.monotonic() < deadline:
        client.publish(topics.request, {"id": f"probe{i}", "text": TEXTS[i % len(TEXTS)]})
        reply = client.get(10, topic=topics.response).json()
        assert reply["id"] == f"probe{i}" and "error" not in reply
        if reply["model"]["version"] == wanted:
            return wanted
        i += 1
        time.sleep(0.1)
    raise AssertionError(f"no reply from version {wanted} within {timeout} s")


def test_serve_swaps_the_model_when_the_bundle_changes_or_on_sighup_and_refuses_a_bad_one(broker, tiny_bundle, v2,
                                                                                          tmp_path):
    import os
    import signal

    # Given `serve` on a symlink to v1 that it looks at every 0.2 s
    current = tmp_path / "current"
    current.symlink_to(tiny_bundle[0].root)
    thing = "reload-cli"
    topics = Topics.for_thing(thing)
    log = tmp_path / "service.log"
    proc = _serve_process(current, broker.url, thing, log, "--bundle-poll-s", "0.2")
    try:
        with Client(broker.url, "reload-cli-client", [topics.response, topics.status]) as c:
            deadline = time.monotonic() + 30
            while c.get(30, topic=topics.status).json()["state"] != "online" and time.monotonic() < deadline:
                pass
            assert _versions_seen(c, topics, "1")
            # When the deployment points the symlink at v2 (an atomic rename of a new link)
            (tmp_path / "next").symlink_to(v2.root)
            os.replace(tmp_path / "next", current)
            # Then v2 answers without a restart
            assert _versions_seen(c, topics, "2")
            # When the link moves to a tampered bundle: refused, v2 keeps answering
            bad = tmp_path / "tampered"
            shutil.copytree(v2.root, bad)
            with (bad / "model.onnx").open("r+b") as fh:
                fh.seek(100)
                fh.write(b"\xff\xff")
            (tmp_path / "next").symlink_to(bad)
            os.replace(tmp_path / "next", current)
            deadline = time.monotonic() + 10
            while "refused" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "model update from" in log.read_text() and "refused" in log.read_text(), log.read_text()[-2000:]
            assert _versions_seen(c, topics, "2", timeout=2)
            # When the link goes back to v1 and SIGHUP arrives before the next look would
            (tmp_path / "next").symlink_to(tiny_bundle[0].root)
            os.replace(tmp_path / "next", current)
            os.kill(proc.pid, signal.SIGHUP)
            assert _versions_seen(c, topics, "1")
            assert proc.poll() is None, "the service is still the same process"
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
        assert log.read_text().count("model swapped") == 2
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


class _HeldModel:
    """A stand-in classifier whose ``predict_batch`` can be held; records whether it was closed."""

    def __init__(self, version: str) -> None:
        self.name, self.version, self.closed = "m", version, False
        self.hold, self.entered = threading.Event(), threading.Event()
        self.hold.set()

    def predict_batch(self, texts):  # type: ignore[no-untyped-def]
        assert not self.closed, "called after close"
        self.entered.set()
        assert self.hold.wait(10)
        return [f"{t}@{self.version}" for t in texts]

    def close(self) -> None:
        self.closed = True


def test_a_swap_while_another_worker_runs_the_old_model_closes_it_only_after_that_call():
    # Given a worker in the middle of a call on v1
    v1, v2 = _HeldModel("1"), _HeldModel("2")
    model = SwappableClassifier(v1)
    v1.hold.clear()
    first: list = []
    worker = threading.Thread(target=lambda: first.append(model.predict_with_model(["a"])))
    worker.start()
    assert v1.entered.wait(5)
    # When v2 is staged and another worker makes a call
    model.stage(v2)
    served_by, answers = model.predict_with_model(["b"])
    # Then that call is v2's, v1 stays open for the call still running, and that call is labelled v1
    assert (served_by, answers) == (v2, ["b@2"]) and model.version == "2"
    assert not v1.closed
    v1.hold.set()
    worker.join(5)
    assert first == [(v1, ["a@1"])]
    assert v1.closed and not v2.closed and model.swaps == 1
    model.close()
    assert v2.closed
