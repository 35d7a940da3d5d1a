"""``python -m cloud.greengrass build``: both components from a registered model version."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from cloud.errors import CloudError
from cloud.greengrass import ComponentBuildError, build_components, main, validate_recipe
from tests.conftest import REPO
from tests.greengrass.conftest import register_tiny


def _sha(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


def test_the_model_component_ships_the_registered_bundle_zip_with_its_version_and_digest(built, registered_store):
    model = built.component("model")
    assert model["name"] == "com.slmintents.IntentModel" and model["version"] == "1.0.1"
    recipe = json.loads(Path(model["recipe"]).read_text())
    assert validate_recipe(recipe) == []
    assert (recipe["ComponentName"], recipe["ComponentVersion"]) == (model["name"], "1.0.1")
    artifact_file = built.out / "artifacts" / model["name"] / "1.0.1" / "model.zip"
    store, _ = registered_store
    registry_zip = store / "slm-intents" / "edge" / "1.zip"
    assert artifact_file.read_bytes() == registry_zip.read_bytes()
    for manifest in recipe["Manifests"]:
        (artifact,) = manifest["Artifacts"]
        assert artifact["Uri"] == "s3://BUCKET_NAME/com.slmintents.IntentModel/1.0.1/model.zip"
        assert artifact["Algorithm"] == "SHA-256" and base64.b64decode(artifact["Digest"]) == _sha(artifact_file)
    assert model["artifacts"][0]["sha256"] == hashlib.sha256(artifact_file.read_bytes()).hexdigest()
    assert recipe["ComponentDescription"].endswith(f"Registry slm-intents-snips/1; model.zip sha256 "
                                                   f"{model['artifacts'][0]['sha256']}.")
    assert built.registry["bundle"]["version"] == "1" and built.registry["approval_status"] == "PendingManualApproval"


def test_the_app_component_ships_the_wheel_and_the_pinned_requirements(built):
    app = built.component("app")
    assert app["name"] == "com.slmintents.IntentService" and app["version"] == "0.1.0"
    assert app["depends_on"] == {"com.slmintents.IntentModel": {"VersionRequirement": ">=1.0.0 <2.0.0",
                                                                "DependencyType": "HARD"}}
    app_zip = built.out / "artifacts" / app["name"] / app["version"] / "app.zip"
    with zipfile.ZipFile(app_zip) as zf:
        names = sorted(zf.namelist())
        pins = sorted(p.name for p in (REPO / "greengrass" / "app").glob("requirements-py*.txt"))
        assert pins and names == sorted([*pins, app["wheel"]]) and app["wheel"].startswith("slm_intents-")
        with zipfile.ZipFile(zf.open(app["wheel"])) as wheel:
            assert "edge_runtime/service/runner.py" in wheel.namelist()
    recipe = json.loads(Path(app["recipe"]).read_text())
    assert validate_recipe(recipe) == [] and app["recipe_bytes"] < 16_000
    digest = {a["Digest"] for m in recipe["Manifests"] for a in m["Artifacts"]}
    assert digest == {base64.b64encode(_sha(app_zip)).decode()}
    assert json.loads((built.out / "build.json").read_text())["components"][1]["name"] == app["name"]


def test_a_bucket_and_an_app_version_are_filled_in(registered_store, wheel, tmp_path):
    store, version = registered_store
    result = build_components(version, store=store, out=tmp_path / "out", wheel=wheel, bucket="my-bucket",
                              app_version="2.3.4")
    app = result.component("app")
    assert app["version"] == "2.3.4"
    assert app["artifacts"][0]["uri"] == "s3://my-bucket/com.slmintents.IntentService/2.3.4/app.zip"


def test_unknown_unapproved_or_tampered_versions_are_refused(registered_store, wheel, tmp_path):
    store, version = registered_store
    with pytest.raises(CloudError, match="99"):
        build_components(99, store=store, out=tmp_path / "a", wheel=wheel)
    with pytest.raises(ComponentBuildError, match="not Approved"):
        build_components(version, store=store, out=tmp_path / "b", wheel=wheel, require_approved=True)
    # a bundle zip whose files no longer match the manifest is not shipped
    other, v = register_tiny(tmp_path / "store2")
    zip_path = other / "slm-intents" / "edge" / f"{v}.zip"
    with zipfile.ZipFile(zip_path) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    files["model.onnx"] = files["model.onnx"][:-1] + b"\x00"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    with pytest.raises(ComponentBuildError, match="not a usable edge bundle"):
        build_components(v, store=other, out=tmp_path / "c", wheel=wheel)


def test_the_command_line_builds_and_prints_the_local_deployment_command(tmp_path, wheel, capsys):
    store, version = register_tiny(tmp_path / "store", approve=True)
    assert main(["build", "--version", str(version), "--store", str(store), "--wheel", str(wheel)]) == 0
    out = capsys.readouterr().out
    assert "Approved" in out and "greengrass-cli deployment create" in out
    assert '--merge "com.slmintents.IntentModel=1.0.1"' in out
    assert (store / "slm-intents" / "greengrass" / "1" / "recipes" / "com.slmintents.IntentModel-1.0.1.json").is_file()
    assert main(["build", "--version", "7", "--store", str(store), "--wheel", str(wheel)]) == 1
    assert "error:" in capsys.readouterr().err


def _zip_signature(zip_path: Path, public: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    from edge_runtime.signing import SIGNATURE_NAME, load_public_key, verify_bundle

    root = tmp_path / "unzipped"
    with zipfile.ZipFile(zip_path) as zf:
        assert SIGNATURE_NAME in zf.namelist(), f"{zip_path} carries no {SIGNATURE_NAME}"
        zf.extractall(root)
    return verify_bundle(root, load_public_key(public))


def test_a_signing_key_signs_the_bundle_into_the_model_component(tmp_path, wheel, signing_keys, capsys):
    # Given an unsigned registered bundle and a signing key
    private, public = signing_keys
    store, version = register_tiny(tmp_path / "store")
    # When the components are built with the key
    assert main(["build", "--version", str(version), "--store", str(store), "--wheel", str(wheel),
                 "--sign-key", str(private)]) == 0
    out = capsys.readouterr().out
    # Then model.zip carries a manifest.sig that the device's public key accepts
    build = json.loads((store / "slm-intents" / "greengrass" / "1" / "build.json").read_text())
    model_zip = Path(build["components"][0]["artifacts"][0]["path"])
    assert _zip_signature(model_zip, public, tmp_path).manifest.version == "1"
    # and the recipe's Digest is of that signed zip, and the public key to configure is printed and recorded
    recipe = json.loads(Path(build["components"][0]["recipe"]).read_text())
    assert base64.b64decode(recipe["Manifests"][0]["Artifacts"][0]["Digest"]) == _sha(model_zip)
    from cloud.signing import load_private_key, public_key_b64

    key_b64 = public_key_b64(load_private_key(private))
    assert build["registry"]["bundle"]["signature"]["public_key_b64"] == key_b64
    assert f'"BundlePublicKey": "{key_b64}"' in out and "--update-config" in out


def test_a_bundle_signed_after_it_was_zipped_ships_its_signature(tmp_path, wheel, signing_keys):
    # Given a registered bundle whose directory was signed after the pipeline zipped it (the zip has no sig)
    from cloud.signing import sign_bundle

    private, public = signing_keys
    store, version = register_tiny(tmp_path / "store")
    sign_bundle(store / "slm-intents" / "edge" / str(version), private)
    # When the components are built without a key
    result = build_components(version, store=store, out=tmp_path / "out", wheel=wheel)
    # Then the directory's signature went into model.zip
    model_zip = Path(result.component("model")["artifacts"][0]["path"])
    assert _zip_signature(model_zip, public, tmp_path).manifest.version == "1"
    assert "signed after the bundle was zipped" in result.registry["bundle"]["signature"]["source"]


def test_an_unusable_signing_key_is_refused_before_an_earlier_build_is_removed(registered_store, wheel, tmp_path):
    store, version = registered_store
    out = tmp_path / "out"
    build_components(version, store=store, out=out, wheel=wheel)
    (tmp_path / "bad.key").write_text("not a key")
    with pytest.raises(ComponentBuildError, match="cannot sign the bundle"):
        build_components(version, store=store, out=out, wheel=wheel, sign_key=tmp_path / "bad.key")
    assert (out / "build.json").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--registry", "sagemaker"], "pass --store s3://BUCKET"),
    (["--registry", "sagemaker", "--store", ".store"], "pass --store s3://BUCKET"),
    (["--registry", "sagemaker", "--store", "s3://b", "--bucket", "other"], "--bucket is for the local registry"),
])
def test_the_sagemaker_build_wants_the_pipelines_bucket(argv, message, capsys):
    from cloud.greengrass.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["build", "--version", "1", *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err
