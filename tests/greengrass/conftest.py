"""A local store whose registry holds the tiny bundle as version 1, with its bundle and zip artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import build_tiny_bundle

GROUP = "slm-intents-snips"


def register_tiny(store_root: Path, *, approve: bool = False, signed_with: Path | None = None,
                  tampered: bool = False) -> tuple[Path, int]:
    """Register the tiny bundle like the pipeline's register + package steps do; returns (store, version).

    ``signed_with``: sign the bundle with this private key before it is zipped. ``tampered``: then replace its
    model with another one and the manifest with one that matches it (every sha256 right), under the old
    signature: what someone who can publish components but does not hold the key can make.
    """
    import shutil

    from cloud.registry import open_registry
    from cloud.store import Store
    from edge_runtime.bundle import zip_bundle

    store = Store(store_root)
    with open_registry("local", store=store) as reg:
        pkg = reg.register(GROUP, {"int8": {"accuracy": 0.5, "macro_f1": 0.5}}, {"run_id": "tiny"}, {})
        edge = store.edge(str(pkg.version))
        bundle, _ = build_tiny_bundle(edge, version=str(pkg.version))
        if signed_with is not None:
            from cloud.signing import sign_bundle

            sign_bundle(bundle.root, signed_with)
            if tampered:
                other, _ = build_tiny_bundle(edge.parent / f"{pkg.version}-other", version=str(pkg.version), seed=7)
                for name in ("model.onnx", "manifest.json"):
                    shutil.copyfile(other.root / name, bundle.root / name)
        zipped = zip_bundle(bundle.root, edge.parent / f"{pkg.version}.zip")
        reg.add_artifacts(pkg.group, pkg.version, {"bundle": bundle.root.resolve().as_uri(),
                                                   "bundle_zip": zipped.resolve().as_uri()})
        if approve:
            reg.approve(pkg.group, pkg.version, "tests", "tiny bundle for the component tests")
    return store_root, pkg.version


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(private, public) Ed25519 PEM files made by ``cloud.signing keygen``'s function."""
    pytest.importorskip("cryptography", reason="the signing extra is not installed")
    from cloud.signing import generate_keypair

    root = tmp_path_factory.mktemp("keys")
    generate_keypair(root / "signing.key", root / "signing.pub")
    return root / "signing.key", root / "signing.pub"


@pytest.fixture(scope="session")
def registered_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    return register_tiny(tmp_path_factory.mktemp("gg-store") / "store")


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The slm_intents wheel of this checkout, built once per session."""
    from cloud.greengrass import build_wheel

    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def built(registered_store, wheel, tmp_path_factory):  # type: ignore[no-untyped-def]
    """Both components built from registry version 1 (the session's shared, read-only build)."""
    from cloud.greengrass import build_components

    store, version = registered_store
    return build_components(version, store=store, out=tmp_path_factory.mktemp("gg-build") / "out", wheel=wheel)
