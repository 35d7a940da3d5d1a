"""One verified load path: at start-up, on every update and for a shadow candidate, the service copies the bundle,
verifies the copy and loads the copy, so bytes replaced in the bundle directory after the check never run; an
update never blocks the main loop, and staging directories never outlive their process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_runtime import IntentClassifier
from edge_runtime.errors import IntegrityError, SignatureError
from edge_runtime.service.config import ServiceConfig
from edge_runtime.service.protocol import Topics
from edge_runtime.service.reload import STAGING_PREFIX, BundleReloader, SwappableClassifier
from edge_runtime.service.transports.fake import FakeTransport
from tests.conftest import build_tiny_bundle

TEXT = "play some jazz tonight"


@pytest.fixture(scope="module")
def versions(tmp_path_factory):  # type: ignore[no-untyped-def]
    """Three tiny bundles with the same labels and tokenizer and different weights: what the device should load
    (1), what an update brings (2), and the attacker's model (3)."""
    root = tmp_path_factory.mktemp("versions")
    bundles = {v: build_tiny_bundle(root / f"v{v}", seed=int(v), version=v)[0] for v in ("1", "2", "3")}
    answers = {}
    for v, b in bundles.items():
        with IntentClassifier.from_bundle(b.root, backend="onnxruntime", threads=1) as clf:
            answers[v] = clf.predict(TEXT).to_dict()["top"]
    assert len({str(a) for a in answers.values()}) == 3, "the three test models must answer differently"
    return bundles, answers


def _swap_model_after_the_checks(monkeypatch, target: Path, attacker: Path) -> list[int]:
    """Replace ``target``'s model.onnx with the attacker's bytes at the last moment: after every check, just before
    the backend opens its model file."""
    import edge_runtime.classifier as classifier_module

    real = classifier_module.load_backend
    swaps: list[int] = []

    def swapping(bundle, *args, **kwargs):  # type: ignore[no-untyped-def]
        shutil.copyfile(attacker / "model.onnx", target / "model.onnx")
        swaps.append(1)
        return real(bundle, *args, **kwargs)

    monkeypatch.setattr(classifier_module, "load_backend", swapping)
    return swaps


def _serve_one_request(cfg: ServiceConfig) -> dict:
    from edge_runtime.service.runner import serve

    topics = Topics.for_thing(cfg.thing)
    transport = FakeTransport(request_topic=topics.request)
    stop = threading.Event()
    outcome: list = []
    server = threading.Thread(target=lambda: outcome.append(serve(cfg, stop=stop, transport=transport)), daemon=True)
    server.start()
    try:
        transport.wait_for(1, topic=topics.status, timeout=30)  # "online": the model is loaded
        transport.deliver({"id": "r1", "text": TEXT})
        return transport.wait_for(1, topic=topics.response, timeout=10)[0].json()
    finally:
        stop.set()
        server.join(30)
        assert outcome == [0]


@pytest.mark.parametrize("signed", [False, True])
def test_bytes_replaced_between_the_check_and_the_load_never_run_at_start_up(versions, tmp_path, monkeypatch,
                                                                              signed):
    bundles, answers = versions
    # Given the bundle the device should run (signed with the release key, when a key is configured)
    src = tmp_path / "bundle"
    shutil.copytree(bundles["1"].root, src)
    key = None
    if signed:
        pytest.importorskip("cryptography")
        from cloud.signing import generate_keypair, sign_bundle

        generate_keypair(tmp_path / "k", tmp_path / "k.pub")
        sign_bundle(src, tmp_path / "k")
        key = str(tmp_path / "k.pub")
    # and an attacker who replaces its model file after every check and before the load
    swaps = _swap_model_after_the_checks(monkeypatch, src, bundles["3"].root)
    cfg = ServiceConfig(bundle=str(src), thing=f"toctou-{signed}", backend="onnxruntime", threads=1,
                        bundle_public_key=key, telemetry_interval=0, status_interval_s=3600.0)
    # When `serve` starts and answers a request
    reply = _serve_one_request(cfg)
    # Then the file was replaced, yet the answer is the checked model's, never the attacker's
    assert swaps and (src / "model.onnx").read_bytes() == (bundles["3"].root / "model.onnx").read_bytes()
    assert reply["top"] == answers["1"] and reply["top"] != answers["3"]


def test_bytes_replaced_during_an_update_never_run(versions, tmp_path, monkeypatch):
    bundles, answers = versions
    model = SwappableClassifier(IntentClassifier.from_bundle(bundles["1"].root, backend="onnxruntime", threads=1))
    reloader = BundleReloader(model, backend="onnxruntime", threads=1, staging_dir=str(tmp_path))
    update = tmp_path / "update"
    shutil.copytree(bundles["2"].root, update)
    swaps = _swap_model_after_the_checks(monkeypatch, update, bundles["3"].root)
    try:
        reloader.load(update)
        assert model.predict_batch([TEXT])[0].to_dict()["top"] == answers["2"] and swaps
    finally:
        model.close()


def test_an_update_through_a_link_to_a_device_is_refused_at_once_and_leaves_nothing(versions, tmp_path):
    bundles, _ = versions
    # Given an update whose directory holds a symlink to /dev/zero (reading it never ends)
    bad = tmp_path / "bad"
    shutil.copytree(bundles["2"].root, bad)
    (bad / "zeros").symlink_to("/dev/zero")
    model = SwappableClassifier(IntentClassifier.from_bundle(bundles["1"].root, backend="onnxruntime", threads=1))
    staging = tmp_path / "staging"
    staging.mkdir()
    reloader = BundleReloader(model, backend="onnxruntime", threads=1, staging_dir=str(staging))
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            reloader.load(bad)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append(exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(10)
    try:
        # Then it is refused within seconds, names the link, and the old model serves on; no staging copy is left
        assert not worker.is_alive(), "the update hangs reading /dev/zero"
        assert isinstance(outcome[0], IntegrityError) and "'zeros' is a symlink" in str(outcome[0])
        assert model.version == "1" and reloader.refused == 1 and list(staging.iterdir()) == []
    finally:
        model.close()


def test_staging_directories_of_dead_processes_are_removed_and_live_ones_kept(versions, tmp_path):
    bundles, _ = versions
    # Given the staging copies of a service that was SIGKILLed (its pid is gone) and of one still running
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    stale = tmp_path / f"{STAGING_PREFIX}{dead.stdout.strip()}-abc"
    (stale / "bundle").mkdir(parents=True)
    alive = tmp_path / f"{STAGING_PREFIX}{os.getppid()}-def"
    alive.mkdir()
    # When the next model is loaded there
    model = SwappableClassifier(IntentClassifier.from_bundle(bundles["1"].root, backend="onnxruntime", threads=1))
    BundleReloader(model, backend="onnxruntime", threads=1, staging_dir=str(tmp_path)).load(bundles["2"].root)
    try:
        # Then the dead one's copy is gone, the live one's is kept, and this load has its own
        assert not stale.exists() and alive.exists()
        assert len([p for p in tmp_path.iterdir() if p.name.startswith(f"{STAGING_PREFIX}{os.getpid()}-")]) == 1
    finally:
        model.close()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f"{STAGING_PREFIX}{os.getpid()}-")]


def test_a_stuck_update_never_keeps_serve_from_stopping(versions, tmp_path, monkeypatch):
    import edge_runtime.service.runner as runner

    bundles, _ = versions
    # Given `serve` on a link to v1 that it looks at every 0.1 s, and an update that gets stuck loading
    current = tmp_path / "current"
    current.symlink_to(bundles["1"].root)
    release, entered = threading.Event(), threading.Event()

    def stuck(self, path):  # type: ignore[no-untyped-def]
        entered.set()
        release.wait(30)
        raise IntegrityError("released")

    monkeypatch.setattr(BundleReloader, "load", stuck)
    monkeypatch.setattr(runner, "_UPDATE_JOIN_S", 0.2)
    cfg = ServiceConfig(bundle=str(current), thing="stuck-update", backend="onnxruntime", threads=1,
                        bundle_poll_s=0.1, telemetry_interval=0, status_interval_s=3600.0)
    topics = Topics.for_thing(cfg.thing)
    transport = FakeTransport(request_topic=topics.request)
    stop = threading.Event()
    outcome: list = []
    server = threading.Thread(target=lambda: outcome.append(runner.serve(cfg, stop=stop, transport=transport)),
                              daemon=True)
    server.start()
    try:
        transport.wait_for(1, topic=topics.status, timeout=30)
        (tmp_path / "next").symlink_to(bundles["2"].root)
        os.replace(tmp_path / "next", current)
        assert entered.wait(10), "the change was not noticed"
        # When stop is asked while the update is stuck, Then requests are still answered and serve returns
        transport.deliver({"id": "during", "text": TEXT})
        assert transport.wait_for(1, topic=topics.response, timeout=5)[0].json()["id"] == "during"
        t0 = time.monotonic()
        stop.set()
        server.join(10)
        assert not server.is_alive() and outcome == [0] and time.monotonic() - t0 < 5
    finally:
        release.set()
        stop.set()
        server.join(10)


def test_with_a_key_configured_an_unsigned_shadow_candidate_is_refused(versions, tmp_path):
    pytest.importorskip("cryptography")
    from cloud.signing import generate_keypair
    from edge_runtime.service.runner import fleet_observers

    bundles, _ = versions
    generate_keypair(tmp_path / "k", tmp_path / "k.pub")
    cfg = ServiceConfig(bundle=str(bundles["1"].root), thing="shadow-key", bundle_public_key=str(tmp_path / "k.pub"),
                        shadow_bundle=str(bundles["2"].root), telemetry_interval=0, backend="onnxruntime")
    with IntentClassifier.from_bundle(bundles["1"].root, backend="onnxruntime", threads=1) as clf, \
            pytest.raises(SignatureError, match="not signed"):
        fleet_observers(cfg, clf, FakeTransport(request_topic=Topics.for_thing(cfg.thing).request))


def test_ten_updates_leave_one_staging_copy_and_no_growth(versions, tmp_path):
    import psutil

    bundles, answers = versions
    model = SwappableClassifier(IntentClassifier.from_bundle(bundles["1"].root, backend="onnxruntime", threads=1))
    reloader = BundleReloader(model, backend="onnxruntime", threads=1, staging_dir=str(tmp_path))
    me = psutil.Process()
    try:
        # Given two updates done (allocators warm), When ten more alternate between two bundles, each served once
        samples = []
        for i in range(12):
            version = "2" if i % 2 == 0 else "1"
            reloader.load(bundles[version].root)
            assert model.predict_batch([TEXT])[0].to_dict()["top"] == answers[version]
            if i >= 1:
                samples.append((me.memory_info().rss / 2**20, me.num_fds()))
        # Then only the serving model's copy is on disk, and neither memory nor open files keep growing
        assert len([p for p in tmp_path.iterdir() if p.name.startswith(STAGING_PREFIX)]) == 1
        rss_growth, fd_growth = samples[-1][0] - samples[0][0], samples[-1][1] - samples[0][1]
        assert rss_growth < 16 and fd_growth < 5, samples  # a leak per update would add 10+
        print(f"\n10 updates: RSS {samples[0][0]:.1f} -> {samples[-1][0]:.1f} MB, open files {samples[0][1]} -> "
              f"{samples[-1][1]}")
    finally:
        model.close()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(STAGING_PREFIX)]
