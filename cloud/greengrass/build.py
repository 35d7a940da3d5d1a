"""Build both Greengrass v2 components from a registered model version (``python -m cloud.greengrass build``).

Two components, each a GDK project under ``greengrass/`` (``gdk-config.json`` + ``recipe.json`` template):

- the **model** (``greengrass/model``): the edge bundle zip of registry version N as ``model.zip`` (``Unarchive: ZIP``);
  its install step links ``{work:path}/bundle`` to the unpacked bundle. Version ``<bundle format>.0.<N>``.
  With a signing key the bundle is signed here (``manifest.sig`` goes into ``model.zip``); without one, a
  signature already in the zip is kept, and one made after the pipeline zipped the bundle (``cloud.signing
  sign`` on the registry's bundle directory, over the same ``manifest.json``) is added.
- the **app** (``greengrass/app``): ``app.zip`` holding the pinned ``requirements.txt`` and the ``slm_intents``
  wheel; install makes a venv and installs both, run starts ``python -m edge_runtime serve``. HARD dependency on
  the model component (any version with the same bundle format).

The build does what ``gdk component build`` does with the zip build system (same artifact names, same
placeholders: ``{COMPONENT_NAME}``, ``{COMPONENT_VERSION}``, ``{COMPONENT_AUTHOR}``,
``s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/``), with exact versions, and writes the layout that
``greengrass-cli deployment create --recipeDir ... --artifactDir ...`` reads::

    <out>/recipes/<component>-<version>.json
    <out>/artifacts/<component>/<version>/model.zip | app.zip
    <out>/build.json          components, versions, artifact URIs and sha256, registry version and approval

``<out>`` defaults to ``<store>/slm-intents/greengrass/<N>/`` (:meth:`cloud.store.Store.greengrass`).
Version N comes from the local store's SQLite registry, or (``registry="sagemaker"``, an ``s3://`` store) from
the SageMaker Model Registry with its bundle zip downloaded from ``<store>/edge/<N>.zip``; then ``<out>`` is under
the bucket's local mirror ``.store/s3/<bucket>/`` and the artifact URIs are the S3 keys ``publish`` uploads to. Each
artifact gets ``Digest`` (base64 SHA-256, as Greengrass checks it) and ``Algorithm: SHA-256``; the hex sha256 is
in ``build.json``. Every recipe is checked by :func:`cloud.greengrass.recipe.validate_recipe` before it is written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import unquote, urlsplit

from ..errors import ComponentBuildError
from .recipe import (PROJECTS_DIR, GreengrassProject, digest_b64, is_version, load_project, recipe_bytes,
                     render_recipe, validate_recipe)

__all__ = ["BuildResult", "build_components", "build_wheel"]

REPO = PROJECTS_DIR.parent


@dataclass
class BuildResult:
    """What :func:`build_components` wrote (also saved as ``build.json``)."""

    out: Path
    registry: dict[str, Any]
    components: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "registry": self.registry, "components": self.components,
                "recipe_dir": str(self.out / "recipes"), "artifact_dir": str(self.out / "artifacts")}

    def component(self, role: str) -> dict[str, Any]:
        return next(c for c in self.components if c["role"] == role)


def _path_from_uri(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.scheme != "file":
        raise ComponentBuildError(f"artifact {uri} is not a local file:// URI (S3 artifacts: download them first)")
    return Path(unquote(parts.path))


def _package_model(bundle_zip: Path, version: int, target: Path, *, sign_key: Any,
                   bundle_dir: Path | None) -> dict[str, Any]:
    """Write ``model.zip`` from the registry's bundle zip, verified as the device will (format, every sha256).

    Signs the bundle with ``sign_key`` when given; else keeps the zip's ``manifest.sig``, or adds the one next to
    the same ``manifest.json`` in the registry's bundle directory. Returns the bundle's facts for ``build.json``.
    """
    from edge_runtime.bundle import MANIFEST_NAME, Bundle, zip_bundle
    from edge_runtime.errors import BundleError
    from edge_runtime.signing import SIGNATURE_NAME

    if not bundle_zip.is_file():
        raise ComponentBuildError(f"bundle zip {bundle_zip} of registry version {version} does not exist")
    with tempfile.TemporaryDirectory(prefix="gg-bundle-") as tmp:
        root = Path(tmp) / "bundle"
        try:
            with zipfile.ZipFile(bundle_zip) as zf:
                if MANIFEST_NAME not in zf.namelist():
                    raise ComponentBuildError(f"{bundle_zip}: no {MANIFEST_NAME} at the archive root")
                zf.extractall(root)
            bundle = Bundle.load(root, verify=True)
        except (zipfile.BadZipFile, BundleError) as exc:
            raise ComponentBuildError(f"bundle zip {bundle_zip} is not a usable edge bundle: {exc}") from None
        manifest = bundle.manifest
        if manifest.version != str(version):
            raise ComponentBuildError(f"{bundle_zip} holds bundle version {manifest.version!r}, "
                                      f"not registry version {version}")
        signature = root / SIGNATURE_NAME
        info: dict[str, Any] = {"name": manifest.name, "version": manifest.version,
                                "format_version": manifest.format_version, "labels": list(manifest.labels)}
        rezip = False
        if sign_key is not None:
            from ..signing import public_key_b64, sign_bundle

            sign_bundle(root, sign_key)
            info["signature"] = {"source": "signed by this build", "public_key_b64": public_key_b64(sign_key)}
            rezip = True
        elif signature.is_file():
            info["signature"] = {"source": "the registry's bundle zip"}
        elif bundle_dir is not None and (bundle_dir / SIGNATURE_NAME).is_file() and \
                (bundle_dir / MANIFEST_NAME).read_bytes() == (root / MANIFEST_NAME).read_bytes():
            shutil.copyfile(bundle_dir / SIGNATURE_NAME, signature)
            info["signature"] = {"source": f"{bundle_dir / SIGNATURE_NAME} (signed after the bundle was zipped)"}
            rezip = True
        else:
            info["signature"] = None
        target.parent.mkdir(parents=True, exist_ok=True)
        if rezip:
            zip_bundle(root, target)
        else:
            shutil.copyfile(bundle_zip, target)  # the registry's zip, byte for byte
    return info


def _signing_key(sign_key: Any) -> Any:
    """The Ed25519 private key to sign with (None: none), or :class:`ComponentBuildError` saying why not."""
    if sign_key is None or hasattr(sign_key, "sign"):
        return sign_key
    from edge_runtime.errors import BundleError

    from ..signing import load_private_key

    try:
        return load_private_key(sign_key)
    except BundleError as exc:  # SignatureError: unreadable key, not Ed25519, the signing extra missing
        raise ComponentBuildError(f"cannot sign the bundle: {exc}") from None


def build_wheel(dest: Path) -> Path:
    """``pip wheel --no-deps`` of this checkout into ``dest``; returns the wheel."""
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.glob("*.whl"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",  # nosec B603 # fixed argv
                           "--quiet", "--disable-pip-version-check", "-w", str(dest), str(REPO)],
                          capture_output=True, text=True)
    wheels = sorted(set(dest.glob("*.whl")) - before) or sorted(dest.glob("slm_intents-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise ComponentBuildError(f"pip wheel failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return wheels[-1]


def _write_zip(target: Path, files: Mapping[str, Path]) -> Path:
    """A reproducible zip (sorted names, fixed timestamps), files at the archive root, like GDK's zip build."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with open(files[name], "rb") as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    return target


def _project_files(project: GreengrassProject) -> dict[str, Path]:
    """The files GDK's zip build would pack: the project folder less its config, recipe and build output."""
    skip = {"gdk-config.json", "recipe.json", "recipe.yaml", ".gitignore", "greengrass-build", "zip-build"}
    return {p.relative_to(project.root).as_posix(): p for p in sorted(project.root.rglob("*"))
            if p.is_file() and not (set(p.relative_to(project.root).parts) & skip)}


def _write_recipe(out: Path, recipe: Mapping[str, Any]) -> Path:
    problems = validate_recipe(recipe)
    if problems:
        raise ComponentBuildError(f"recipe of {recipe.get('ComponentName')} is invalid: " + "; ".join(problems))
    path = out / "recipes" / f"{recipe['ComponentName']}-{recipe['ComponentVersion']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(recipe_bytes(recipe))
    return path


def _s3_sources(package: Any, store: Any, tmp: Path) -> tuple[Path, Path | None]:
    """Download the bundle zip of a SageMaker-registered version (and its bundle's ``manifest.json`` /
    ``manifest.sig``, for a signature added after zipping) into ``tmp``; returns ``(zip, bundle_dir)``.

    The artifacts must be where the pipeline's ``CompileEdge`` step writes them: ``<store>/edge/<N>.zip`` and
    ``<store>/edge/<N>/`` of the store's bucket (``cloud.aws.steps._compile_edge``).
    """
    from edge_runtime.bundle import MANIFEST_NAME
    from edge_runtime.signing import SIGNATURE_NAME

    from ..aws.errors import AwsError

    expected = {"bundle_zip": f"{store.edge(str(package.version))}.zip", "bundle": store.edge(str(package.version))}
    for key, uri in expected.items():
        given = str(package.artifacts.get(key, "")).rstrip("/")
        if not given:
            raise ComponentBuildError(f"{package.ref} has no {key!r} artifact (did its CompileEdge step run?)")
        if given != uri:
            raise ComponentBuildError(f"{package.ref}: artifact {key} is {given}, not {uri} of the store "
                                      f"{store.root} (pass the store the pipeline wrote to)")
    try:
        bundle_zip = store.download_file(expected["bundle_zip"], tmp / f"{package.version}.zip")
        bundle_dir = tmp / "bundle"
        for name in (MANIFEST_NAME, SIGNATURE_NAME):
            uri = f"{expected['bundle']}/{name}"
            if store.exists(uri):
                store.download_file(uri, bundle_dir / name)
    except AwsError as exc:
        raise ComponentBuildError(f"cannot read the bundle of {package.ref} from {store.root}: {exc}") from None
    return bundle_zip, (bundle_dir if (bundle_dir / MANIFEST_NAME).is_file() else None)


def build_components(version: int, *, store: str | Path | Any | None = None, group: str | None = None,
                     out: str | Path | None = None, bucket: str | None = None, app_version: str | None = None,
                     wheel: str | Path | None = None, require_approved: bool = False,
                     projects_dir: str | Path = PROJECTS_DIR, sign_key: Any = None, registry: str = "local",
                     region: str | None = None, sagemaker_client: Any = None) -> BuildResult:
    """Build both components from registry version ``version`` (see the module docstring).

    ``registry="local"`` (the default): ``store`` is a local store, its SQLite registry holds the version and
    its ``file://`` bundle zip. ``registry="sagemaker"``: the version is a SageMaker Model Registry version
    (``sagemaker_client`` or one for ``region``), ``store`` the S3 store the pipeline wrote (``s3://bucket[/prefix]``
    or an :class:`~cloud.aws.s3store.S3Store`); the bundle zip comes from ``<store>/edge/<N>.zip``, ``out``
    defaults to the local mirror ``.store/s3/<bucket>/<prefix>/slm-intents/greengrass/<N>/`` and the recipes'
    artifact URIs are where ``cloud.aws.greengrass publish`` uploads them
    (``<store>/greengrass/<component>/<version>/<file>``).

    ``require_approved``: refuse a version that is not ``Approved`` (without it, any status builds, and the CLI
    prints a note). ``sign_key``: an Ed25519 private key (or its PEM file) to sign the bundle with
    (``manifest.sig`` in ``model.zip``); devices configured with its public key (``BundlePublicKey``) refuse
    anything else.
    """
    from edge_runtime import __version__ as runtime_version
    from edge_runtime.bundle import FORMAT_VERSION

    from ..params import load_params
    from ..store import DEFAULT_STORE, Store

    group = group or load_params().model_package_group
    if registry not in ("local", "sagemaker"):
        raise ComponentBuildError(f"unknown registry {registry!r}; expected local or sagemaker")
    source = store if store is not None and not isinstance(store, (str, Path)) else Store.at(store)
    s3 = not isinstance(source, Store)
    if s3 and region and source.client is None and source.region is None:
        from dataclasses import replace

        source = replace(source, region=region)
    if s3 != (registry == "sagemaker"):
        raise ComponentBuildError("the local registry needs a local store; a SageMaker-registered version needs "
                                  "the S3 store its pipeline wrote (--store s3://BUCKET)")
    from ..registry import open_registry

    opened = (open_registry("sagemaker", region=region, client=sagemaker_client) if s3 else
              open_registry("local", store=source, create=False))
    with opened as reg:
        package = reg.get(group, int(version))
    if require_approved and package.approval_status.value != "Approved":
        raise ComponentBuildError(f"{package.ref} is {package.approval_status.value}, not Approved")
    scratch = tempfile.TemporaryDirectory(prefix="gg-source-")
    try:
        if s3:
            bundle_zip, bundle_dir = _s3_sources(package, source, Path(scratch.name))
            local = Store(Path(DEFAULT_STORE) / "s3" / source.bucket / source.prefix)
        else:
            if "bundle_zip" not in package.artifacts:
                raise ComponentBuildError(f"{package.ref} has no 'bundle_zip' artifact (was it packaged?)")
            bundle_zip = _path_from_uri(package.artifacts["bundle_zip"])
            bundle_dir = _path_from_uri(package.artifacts["bundle"]) if "bundle" in package.artifacts else None
            local = source
        return _build(package, bundle_zip, bundle_dir, out=Path(out) if out is not None else
                      local.greengrass(str(version)), s3_store=source if s3 else None,
                      bucket=bucket or "BUCKET_NAME", app_version=app_version or runtime_version, wheel=wheel,
                      projects_dir=projects_dir, sign_key=sign_key, model_version=f"{FORMAT_VERSION}.0.{int(version)}")
    finally:
        scratch.cleanup()


def _build(package: Any, bundle_zip: Path, bundle_dir: Path | None, *, out: Path, s3_store: Any, bucket: str,
           app_version: str, wheel: str | Path | None, projects_dir: str | Path, sign_key: Any,
           model_version: str) -> BuildResult:
    version = package.version

    model_project = load_project(Path(projects_dir) / "model")
    app_project = load_project(Path(projects_dir) / "app")
    for project in (model_project, app_project):
        problems = validate_recipe(project.template, template=True)
        if problems:
            raise ComponentBuildError(f"template {project.root}/recipe.json is invalid: " + "; ".join(problems))
    dependency = app_project.template.get("ComponentDependencies", {}).get(model_project.name)
    if dependency is None:
        raise ComponentBuildError(f"{app_project.name} does not depend on {model_project.name}")

    key = _signing_key(sign_key)  # before anything is removed: a bad key loses no earlier build
    if not is_version(app_version):
        raise ComponentBuildError(f"app version {app_version!r} is not a semantic version")
    out_dir = out
    if out_dir.exists():
        shutil.rmtree(out_dir)

    # model component: the registry's zip (signed here when a key is given)
    model_zip = out_dir / "artifacts" / model_project.name / model_version / model_project.zip_name
    bundle_info = _package_model(bundle_zip, int(version), model_zip, sign_key=key, bundle_dir=bundle_dir)
    result = BuildResult(out_dir, {"group": package.group, "version": package.version,
                                   "approval_status": package.approval_status.value, "stage": package.stage.value,
                                   "bundle": bundle_info})
    if s3_store is not None:
        result.registry["source"] = {"backend": "sagemaker", "bundle_zip": package.artifacts["bundle_zip"],
                                     "bundle_zip_sha256": digest_b64(bundle_zip)[1]}
    model_recipe = _at_store(render_recipe(model_project, version=model_version,
                                           artifacts={model_zip.name: model_zip}, bucket=bucket), s3_store)
    # Traceability in the Greengrass console: which registry version and which bytes this component carries.
    model_recipe["ComponentDescription"] = (f"{model_recipe.get('ComponentDescription', '')} Registry {package.ref}; "
                                            f"{model_zip.name} sha256 {digest_b64(model_zip)[1]}.").strip()
    result.components.append(_record("model", model_project, model_version, _write_recipe(out_dir, model_recipe),
                                     [model_zip]))
    # app component: requirements + wheel in one zip
    with tempfile.TemporaryDirectory(prefix="gg-wheel-") as tmp:
        wheel_path = Path(wheel) if wheel is not None else build_wheel(Path(tmp))
        if not wheel_path.is_file():
            raise ComponentBuildError(f"wheel {wheel_path} does not exist")
        files = _project_files(app_project)
        files[wheel_path.name] = wheel_path
        app_dir = out_dir / "artifacts" / app_project.name / app_version
        app_zip = _write_zip(app_dir / app_project.zip_name, files)
    result.components.append(_record("app", app_project, app_version,
                                     _write_recipe(out_dir, _at_store(render_recipe(
                                         app_project, version=app_version, artifacts={app_zip.name: app_zip},
                                         bucket=bucket), s3_store)), [app_zip],
                                     wheel=wheel_path.name, depends_on={model_project.name: dependency}))
    (out_dir / "build.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return result


def _at_store(recipe: dict[str, Any], s3_store: Any) -> dict[str, Any]:
    """Point the artifact URIs at ``<store>/greengrass/<component>/<version>/<file>``, where ``publish`` puts them."""
    if s3_store is not None:
        for manifest in recipe.get("Manifests", []):
            for artifact in manifest.get("Artifacts", []):
                artifact["Uri"] = s3_store.uri_of("greengrass", recipe["ComponentName"], recipe["ComponentVersion"],
                                                  artifact["Uri"].rsplit("/", 1)[-1])
    return recipe


def _record(role: str, project: GreengrassProject, version: str, recipe_path: Path, artifacts: Sequence[Path],
            **extra: Any) -> dict[str, Any]:
    recipe = json.loads(recipe_path.read_text(encoding="utf-8"))
    uris = {a["Uri"].rsplit("/", 1)[-1]: a["Uri"] for m in recipe["Manifests"] for a in m.get("Artifacts", [])}
    return {"role": role, "name": project.name, "version": version, "recipe": str(recipe_path),
            "recipe_bytes": recipe_path.stat().st_size,
            "artifacts": [{"path": str(a), "uri": uris[a.name], "sha256": digest_b64(a)[1], "bytes": a.stat().st_size}
                          for a in artifacts], **extra}
