"""Bundle signatures: Ed25519 over the manifest, verified on the device; unsigned bundles refused when a key is set."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("cryptography")

from cloud.signing import generate_keypair, main as signing_main, sign_bundle  # noqa: E402
from edge_runtime.errors import IntegrityError, SignatureError  # noqa: E402
from edge_runtime.signing import SIGNATURE_NAME, load_public_key, verify_bundle  # noqa: E402


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("keys")
    generate_keypair(root / "signing.key", root / "signing.pub")
    return root / "signing.key", root / "signing.pub"


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("other-keys")
    generate_keypair(root / "other.key", root / "other.pub")
    return root / "other.key", root / "other.pub"


def test_a_signed_bundle_verifies_and_the_private_key_is_private(bundle_copy, keys):
    # Given a bundle signed with the release key
    sig = sign_bundle(bundle_copy, keys[0])
    # Then it verifies against the public key, and only the owner can read the private key
    assert sig.name == SIGNATURE_NAME and verify_bundle(bundle_copy, load_public_key(keys[1])).manifest.name == "tiny"
    assert keys[0].stat().st_mode & 0o077 == 0


def test_unsigned_tampered_and_foreign_signed_bundles_are_refused(bundle_copy, keys, other_keys, tmp_path):
    key = load_public_key(keys[1])
    # Given an unsigned bundle: refused when a key is configured
    with pytest.raises(SignatureError, match="not signed"):
        verify_bundle(bundle_copy, key)
    # Given one signed with another key: refused
    sign_bundle(bundle_copy, other_keys[0])
    with pytest.raises(SignatureError, match="does not verify"):
        verify_bundle(bundle_copy, key)
    # Given a correctly signed bundle whose manifest is then edited (a label renamed): refused
    sign_bundle(bundle_copy, keys[0])
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["labels"][0] = "Evil"
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_bundle(bundle_copy, key)
    # Given a signed manifest but a model file swapped afterwards: the signed sha256 catches it
    fresh = tmp_path / "fresh"
    shutil.copytree(bundle_copy.parent / "bundle", fresh)
    manifest["labels"][0] = "AddToPlaylist"
    (fresh / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    sign_bundle(fresh, keys[0])
    with (fresh / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(IntegrityError):
        verify_bundle(fresh, key)
    # Given garbage in manifest.sig: a clear error, not a crash
    (fresh / SIGNATURE_NAME).write_text("not base64 !!")
    with pytest.raises(SignatureError, match="base64"):
        verify_bundle(fresh, key)


def test_a_bad_public_key_is_a_signature_error(tmp_path):
    (tmp_path / "k.pub").write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    with pytest.raises(SignatureError):
        load_public_key(tmp_path / "k.pub")
    with pytest.raises(SignatureError, match="cannot read"):
        load_public_key(tmp_path / "missing.pub")


def test_the_cli_makes_keys_signs_and_verifies(bundle_copy, tmp_path, capsys):
    priv, pub = tmp_path / "k", tmp_path / "k.pub"
    assert signing_main(["keygen", "--private", str(priv), "--public", str(pub)]) == 0
    assert signing_main(["keygen", "--private", str(priv), "--public", str(pub)]) == 1  # never overwrites a key
    assert signing_main(["verify", "--public-key", str(pub), str(bundle_copy)]) == 1
    assert signing_main(["sign", "--key", str(priv), str(bundle_copy)]) == 0
    assert signing_main(["verify", "--public-key", str(pub), str(bundle_copy)]) == 0
    assert "signed and intact" in capsys.readouterr().out


def test_serve_refuses_an_unsigned_bundle_when_a_key_is_configured(bundle_copy, keys):
    from edge_runtime.service.config import ServiceConfig
    from edge_runtime.service.runner import serve
    from edge_runtime.service.transports.fake import FakeTransport

    cfg = ServiceConfig(bundle=str(bundle_copy), thing="signed-thing", backend="onnxruntime",
                        bundle_public_key=str(keys[1]), status_interval_s=3600.0)
    stop = threading.Event()
    stop.set()
    # Given no signature: serve refuses before loading anything
    with pytest.raises(SignatureError):
        serve(cfg, stop=stop, transport=FakeTransport(request_topic="cmd/intents/signed-thing/request"))
    # Given a signature by the configured key: it serves (and stops at once, as asked)
    sign_bundle(bundle_copy, keys[0])
    assert serve(cfg, stop=stop, transport=FakeTransport(request_topic="cmd/intents/signed-thing/request")) == 0


def test_without_a_key_the_runtime_never_imports_cryptography(tiny_bundle):
    code = (
        "import sys\n"
        "from edge_runtime import IntentClassifier\n"
        "import edge_runtime.signing, edge_runtime.service.runner, edge_runtime.cli\n"
        f"c = IntentClassifier.from_bundle({str(tiny_bundle[0].root)!r}, backend='onnxruntime', threads=1)\n"
        "c.predict('play jazz')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_production_config_requires_mutual_tls(tiny_bundle, tmp_path):
    from edge_runtime.service.config import ServiceConfig
    from edge_runtime.service.errors import ConfigError

    for f in ("ca", "c", "k"):
        (tmp_path / f).write_text("x")
    with pytest.raises(ConfigError, match="require_mtls"):
        ServiceConfig(bundle="b", thing="t", broker="mqtt://127.0.0.1:1883", require_mtls=True)
    with pytest.raises(ConfigError, match="require_mtls"):
        ServiceConfig(bundle="b", thing="t", broker="mqtts://127.0.0.1:8883", ca=str(tmp_path / "ca"),
                      require_mtls=True)
    ok = ServiceConfig(bundle="b", thing="t", broker="mqtts://127.0.0.1:8883", ca=str(tmp_path / "ca"),
                       cert=str(tmp_path / "c"), key=str(tmp_path / "k"), require_mtls=True)
    assert ok.require_mtls
    # and from the environment, as a Greengrass recipe or systemd unit would set it
    from edge_runtime.service.config import from_sources

    with pytest.raises(ConfigError, match="require_mtls"):
        from_sources({"bundle": "b", "thing": "t"}, env={"EDGE_INTENTS_REQUIRE_MTLS": "true"})
