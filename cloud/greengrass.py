"""Greengrass v2 components from a registered model version: ``python -m cloud.greengrass build --version N``.

Two components, each a GDK project under ``greengrass/`` (``gdk-config.json`` + ``recipe.json`` template):

- the **model** (``greengrass/model``): the edge bundle zip of registry version N as ``model.zip`` (``Unarchive: ZIP``);
  its install step links ``{work:path}/bundle`` to the unpacked bundle. Version ``<bundle format>.0.<N>``.
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

Each artifact gets ``Digest`` (base64 SHA-256, as Greengrass checks it) and ``Algorithm: SHA-256``; the hex sha256
is in ``build.json``. Every recipe is checked by :func:`validate_recipe` (field names and types, Nucleus Lite
rules, recipe variables, size) before it is written.

Example::

    python -m cloud.greengrass build --version 3 --store .store --bucket my-artifacts-bucket
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import unquote, urlsplit

from .errors import CloudError

__all__ = [
    "ComponentBuildError",
    "GreengrassProject",
    "BuildResult",
    "PROJECTS_DIR",
    "MAX_RECIPE_BYTES",
    "SUPPORTED_ARCHITECTURES",
    "load_project",
    "render_recipe",
    "validate_recipe",
    "recipe_variables",
    "digest_b64",
    "build_components",
    "main",
]

REPO = Path(__file__).resolve().parents[1]
PROJECTS_DIR = REPO / "greengrass"
#: AWS IoT Greengrass refuses recipes over 16 kB.
MAX_RECIPE_BYTES = 16_000
RECIPE_FORMAT_VERSION = "2020-01-25"
#: Manifests every recipe must have (Greengrass ``architecture`` names).
SUPPORTED_ARCHITECTURES = ("aarch64", "amd64")
#: GDK build placeholders allowed in templates.
GDK_PLACEHOLDERS = ("{COMPONENT_NAME}", "{COMPONENT_VERSION}", "{COMPONENT_AUTHOR}")
#: Recipe variables Nucleus Lite substitutes (no component-name prefixes, ``configuration:`` only top-level keys).
PLAIN_VARIABLES = frozenset({"artifacts:path", "artifacts:decompressedPath", "work:path", "kernel:rootPath",
                             "iot:thingName"})
IPC_SERVICES = frozenset({"aws.greengrass.ipc.mqttproxy", "aws.greengrass.ipc.pubsub"})
_TOP_KEYS = {"RecipeFormatVersion", "ComponentName", "ComponentVersion", "ComponentType", "ComponentDescription",
             "ComponentPublisher", "ComponentDependencies", "ComponentConfiguration", "Manifests"}
_MANIFEST_KEYS = {"Platform", "Lifecycle", "Artifacts"}
_PLATFORM_KEYS = {"os", "architecture", "runtime"}
#: Lifecycle steps Nucleus Lite runs (it has no shutdown or recover steps and ignores Skipif).
_LIFECYCLE_STEPS = {"install", "run", "startup", "bootstrap"}
_STEP_KEYS = {"Script", "Timeout", "Setenv", "RequiresPrivilege"}
_ARTIFACT_KEYS = {"Uri", "Digest", "Algorithm", "Unarchive", "Permission"}
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,128}$")
_VARIABLE = re.compile(r"\{([^{}\s]+:[^{}\s]*)\}")


class ComponentBuildError(CloudError):
    """A component cannot be built: the registry version, its bundle, the templates or the wheel is unusable."""


# --- GDK projects -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GreengrassProject:
    """One GDK project directory: ``gdk-config.json`` (name, author) and ``recipe.json`` (the template)."""

    root: Path
    name: str
    author: str
    gdk_config: Mapping[str, Any]
    template: Mapping[str, Any]

    @property
    def zip_name(self) -> str:
        """GDK's zip build names the artifact after the project folder."""
        return f"{self.root.name}.zip"


def component_pin(text: str) -> tuple[str, str]:
    """One ``--component NAME=VERSION`` (an argparse ``type``): ``("com.slmintents.IntentModel", "2.0.0")``."""
    name, sep, version = text.partition("=")
    if not sep or not name or not version:
        raise argparse.ArgumentTypeError(f"wants NAME=VERSION, got {text!r}")
    return name, version


def load_project(root: str | Path) -> GreengrassProject:
    root = Path(root)
    try:
        gdk = json.loads((root / "gdk-config.json").read_text(encoding="utf-8"))
        template = json.loads((root / "recipe.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ComponentBuildError(f"GDK project {root} is unreadable: {exc}") from None
    components = gdk.get("component") or {}
    if len(components) != 1:
        raise ComponentBuildError(f"{root}/gdk-config.json must name exactly one component")
    (name, spec), = components.items()
    return GreengrassProject(root, name, str(spec.get("author", "")), gdk, template)


# --- rendering --------------------------------------------------------------------------------------------------

def digest_b64(path: str | Path) -> tuple[str, str]:
    """``(base64 sha256, hex sha256)`` of a file; Greengrass' ``Digest`` is the base64 form."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return base64.b64encode(h.digest()).decode("ascii"), h.hexdigest()


def _map_strings(value: Any, fn: Any) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    if isinstance(value, dict):
        return {fn(k) if isinstance(k, str) else k: _map_strings(v, fn) for k, v in value.items()}
    return value


def render_recipe(project: GreengrassProject, *, version: str, artifacts: Mapping[str, Path],
                  bucket: str = "BUCKET_NAME") -> dict[str, Any]:
    """The template with name, version, author and artifact URIs filled in and each artifact's Digest added.

    ``artifacts`` maps artifact file names (the last part of each template URI) to the built files.
    """

    def fill(text: str) -> str:
        return (text.replace("{COMPONENT_NAME}", project.name).replace("{COMPONENT_VERSION}", version)
                .replace("{COMPONENT_AUTHOR}", project.author))

    recipe = _map_strings(json.loads(json.dumps(project.template)), fill)
    for manifest in recipe.get("Manifests", []):
        for artifact in manifest.get("Artifacts", []):
            uri = artifact["Uri"]
            filename = uri.rsplit("/", 1)[-1]
            if filename not in artifacts:
                raise ComponentBuildError(f"{project.name}: no built file for artifact {uri}")
            artifact["Uri"] = (uri.replace("BUCKET_NAME", bucket).replace("COMPONENT_NAME", project.name)
                               .replace("COMPONENT_VERSION", version))
            artifact["Digest"], _ = digest_b64(artifacts[filename])
            artifact["Algorithm"] = "SHA-256"
    return recipe


# --- validation -------------------------------------------------------------------------------------------------

def recipe_variables(recipe: Any) -> Iterator[str]:
    """Every ``{namespace:key}`` recipe variable used anywhere in the recipe."""
    if isinstance(recipe, str):
        yield from _VARIABLE.findall(recipe)
    elif isinstance(recipe, list):
        for v in recipe:
            yield from recipe_variables(v)
    elif isinstance(recipe, dict):
        for v in recipe.values():
            yield from recipe_variables(v)


def validate_recipe(recipe: Any, *, template: bool = False) -> list[str]:
    """Problems of a recipe against the recipe format and Nucleus Lite's rules; empty when it is fine.

    Checks field names (case-sensitive) and types, the recipe format version, semantic versions, the manifests
    (linux, ``runtime`` ``*`` or ``aws_nucleus_lite``, one per supported architecture), lifecycle steps (no
    ``shutdown``/``recover``/``Skipif``, no ``RequiresPrivilege``), artifacts (URI, Digest, Unarchive,
    Permission), dependencies, ``accessControl`` (known IPC services, no ``*``), the recipe variables used
    (including that every ``{configuration:/Key}`` exists) and the 16 kB size limit. ``template=True`` accepts
    the GDK placeholders instead of a name, version and digests.
    """
    p: list[str] = []
    if not isinstance(recipe, dict):
        return [f"a recipe is a JSON object, got {type(recipe).__name__}"]
    size = len(json.dumps(recipe, separators=(",", ":")).encode("utf-8"))
    if size >= MAX_RECIPE_BYTES:
        p.append(f"recipe has {size} bytes; Greengrass takes at most {MAX_RECIPE_BYTES}")
    for key in recipe:
        if key not in _TOP_KEYS:
            p.append(f"unknown top-level key {key!r} (keys are case-sensitive: {sorted(_TOP_KEYS)})")
    for key in ("RecipeFormatVersion", "ComponentName", "ComponentVersion", "Manifests"):
        if key not in recipe:
            p.append(f"required key {key!r} is missing")
    if recipe.get("RecipeFormatVersion", RECIPE_FORMAT_VERSION) != RECIPE_FORMAT_VERSION:
        p.append(f"RecipeFormatVersion must be {RECIPE_FORMAT_VERSION!r}")
    name, version = recipe.get("ComponentName", ""), recipe.get("ComponentVersion", "")
    if not (template and name == "{COMPONENT_NAME}") and not (isinstance(name, str) and _NAME.match(name)):
        p.append(f"ComponentName {name!r} must be 1-128 letters, digits, '.', '_' or '-'")
    if not (template and version == "{COMPONENT_VERSION}") and not (isinstance(version, str) and _SEMVER.match(version)):
        p.append(f"ComponentVersion {version!r} is not a semantic version")
    if recipe.get("ComponentType", "aws.greengrass.generic") != "aws.greengrass.generic":
        p.append("ComponentType must be aws.greengrass.generic (the only type Nucleus Lite runs)")
    for key in ("ComponentDescription", "ComponentPublisher"):
        if key in recipe and not isinstance(recipe[key], str):
            p.append(f"{key} must be a string")
    p += _check_dependencies(recipe.get("ComponentDependencies", {}))
    config = recipe.get("ComponentConfiguration", {})
    defaults: Mapping[str, Any] = {}
    if not isinstance(config, dict) or set(config) - {"DefaultConfiguration"}:
        p.append("ComponentConfiguration may only hold DefaultConfiguration")
    else:
        defaults = config.get("DefaultConfiguration", {})
        if not isinstance(defaults, dict):
            p.append("DefaultConfiguration must be an object")
            defaults = {}
        p += _check_access_control(defaults.get("accessControl", {}))
    manifests = recipe.get("Manifests", [])
    if not isinstance(manifests, list) or not manifests:
        p.append("Manifests must be a non-empty list")
        manifests = []
    architectures = []
    for i, manifest in enumerate(manifests):
        p += _check_manifest(i, manifest, template)
        if isinstance(manifest, dict) and isinstance(manifest.get("Platform"), dict):
            architectures.append(manifest["Platform"].get("architecture"))
    for arch in SUPPORTED_ARCHITECTURES:
        if arch not in architectures:
            p.append(f"no manifest for linux {arch}")
    for var in recipe_variables(recipe):
        if var in PLAIN_VARIABLES:
            continue
        if var.startswith("configuration:/"):
            key = var[len("configuration:/"):]
            if "/" in key or not key:
                p.append(f"variable {{{var}}}: only top-level configuration keys are portable to Nucleus Lite")
            elif key not in defaults:
                p.append(f"variable {{{var}}}: {key!r} is not in DefaultConfiguration")
            continue
        p.append(f"variable {{{var}}} is not one Nucleus Lite substitutes "
                 f"({', '.join(sorted(PLAIN_VARIABLES))}, configuration:/Key; no component-name prefixes)")
    return p


def _check_dependencies(deps: Any) -> list[str]:
    if not isinstance(deps, dict):
        return ["ComponentDependencies must be an object"]
    p = []
    for name, spec in deps.items():
        if not isinstance(spec, dict) or set(spec) - {"VersionRequirement", "DependencyType"}:
            p.append(f"dependency {name!r} takes VersionRequirement and DependencyType only")
            continue
        if not isinstance(spec.get("VersionRequirement"), str):
            p.append(f"dependency {name!r} needs a VersionRequirement string")
        if spec.get("DependencyType", "HARD") not in ("HARD", "SOFT"):
            p.append(f"dependency {name!r}: DependencyType must be HARD or SOFT")
    return p


def _check_access_control(acl: Any) -> list[str]:
    if not isinstance(acl, dict):
        return ["accessControl must be an object"]
    p = []
    for service, policies in acl.items():
        if service not in IPC_SERVICES:
            p.append(f"accessControl: unexpected IPC service {service!r}")
        if not isinstance(policies, dict):
            p.append(f"accessControl[{service!r}] must map policy ids to policies")
            continue
        for pid, policy in policies.items():
            if not isinstance(policy, dict) or set(policy) - {"policyDescription", "operations", "resources"}:
                p.append(f"policy {pid!r} takes policyDescription, operations and resources only")
                continue
            for key in ("operations", "resources"):
                items = policy.get(key)
                if not isinstance(items, list) or not items or not all(isinstance(x, str) and x for x in items):
                    p.append(f"policy {pid!r}: {key} must be a non-empty list of strings")
                elif any(x == "*" or x.endswith(":*") for x in items):
                    p.append(f"policy {pid!r}: {key} must name exact values, never '*'")
    return p


def _check_manifest(i: int, manifest: Any, template: bool) -> list[str]:
    where = f"Manifests[{i}]"
    if not isinstance(manifest, dict):
        return [f"{where} must be an object"]
    p = [f"{where}: unknown key {k!r}" for k in manifest if k not in _MANIFEST_KEYS]
    platform = manifest.get("Platform")
    if not isinstance(platform, dict):
        p.append(f"{where}: Platform is required")
    else:
        p += [f"{where}.Platform: unknown key {k!r}" for k in platform if k not in _PLATFORM_KEYS]
        if platform.get("os") != "linux":
            p.append(f"{where}.Platform.os must be 'linux'")
        if platform.get("runtime") not in ("*", "aws_nucleus_lite"):
            p.append(f"{where}.Platform.runtime must be '*' or 'aws_nucleus_lite' (Nucleus Lite needs it)")
        if platform.get("architecture") not in SUPPORTED_ARCHITECTURES:
            p.append(f"{where}.Platform.architecture must be one of {SUPPORTED_ARCHITECTURES}")
    lifecycle = manifest.get("Lifecycle", {})
    if not isinstance(lifecycle, dict):
        p.append(f"{where}.Lifecycle must be an object")
        lifecycle = {}
    for step, body in lifecycle.items():
        if step == "Setenv":
            p += _check_setenv(f"{where}.Lifecycle.Setenv", body)
            continue
        if step not in _LIFECYCLE_STEPS:
            p.append(f"{where}.Lifecycle: step {step!r} is not allowed (Nucleus Lite runs {sorted(_LIFECYCLE_STEPS)}; "
                     "keys are case-sensitive)")
            continue
        if isinstance(body, str):
            continue
        if not isinstance(body, dict):
            p.append(f"{where}.Lifecycle.{step} must be a script string or an object")
            continue
        p += [f"{where}.Lifecycle.{step}: key {k!r} is not allowed" for k in body if k not in _STEP_KEYS]
        if not isinstance(body.get("Script"), str) or not body["Script"].strip():
            p.append(f"{where}.Lifecycle.{step}.Script must be a non-empty string")
        if body.get("RequiresPrivilege") not in (None, False, "false"):
            p.append(f"{where}.Lifecycle.{step}: RequiresPrivilege is not needed and not allowed")
        timeout = body.get("Timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0):
            p.append(f"{where}.Lifecycle.{step}.Timeout must be a positive integer (seconds)")
        if "Setenv" in body:
            p += _check_setenv(f"{where}.Lifecycle.{step}.Setenv", body["Setenv"])
    artifacts = manifest.get("Artifacts", [])
    if not isinstance(artifacts, list):
        return p + [f"{where}.Artifacts must be a list"]
    for j, artifact in enumerate(artifacts):
        at = f"{where}.Artifacts[{j}]"
        if not isinstance(artifact, dict):
            p.append(f"{at} must be an object")
            continue
        p += [f"{at}: unknown key {k!r} (Uri, Digest, Algorithm, Unarchive, Permission)" for k in artifact
              if k not in _ARTIFACT_KEYS]
        uri = artifact.get("Uri")
        if not isinstance(uri, str) or not uri.startswith(("s3://", "greengrass:")):
            p.append(f"{at}.Uri must be an s3:// or greengrass: URI")
        if artifact.get("Unarchive", "NONE") not in ("ZIP", "NONE"):
            p.append(f"{at}.Unarchive must be ZIP or NONE")
        permission = artifact.get("Permission", {})
        if not isinstance(permission, dict) or set(permission) - {"Read", "Execute"} or any(
                v not in ("NONE", "OWNER", "ALL") for v in permission.values()):
            p.append(f"{at}.Permission takes Read and Execute, each NONE, OWNER or ALL")
        has_digest = "Digest" in artifact or "Algorithm" in artifact
        if has_digest:
            if artifact.get("Algorithm") != "SHA-256":
                p.append(f"{at}.Algorithm must be SHA-256")
            try:
                raw = base64.b64decode(str(artifact.get("Digest", "")), validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != 32:
                p.append(f"{at}.Digest must be the base64 SHA-256 of the artifact")
        elif not template:
            p.append(f"{at} needs Digest and Algorithm")
    return p


def _check_setenv(where: str, env: Any) -> list[str]:
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        return [f"{where} must map names to strings"]
    return []


# --- building ---------------------------------------------------------------------------------------------------

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


def _check_bundle_zip(zip_path: Path, version: int) -> dict[str, Any]:
    """Unpack the registry's bundle zip and verify it as the device will (format, every sha256)."""
    from edge_runtime.bundle import MANIFEST_NAME, Bundle
    from edge_runtime.errors import BundleError

    if not zip_path.is_file():
        raise ComponentBuildError(f"bundle zip {zip_path} of registry version {version} does not exist")
    with tempfile.TemporaryDirectory(prefix="gg-bundle-") as tmp:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                if MANIFEST_NAME not in zf.namelist():
                    raise ComponentBuildError(f"{zip_path}: no {MANIFEST_NAME} at the archive root")
                zf.extractall(tmp)
            bundle = Bundle.load(tmp, verify=True)
        except (zipfile.BadZipFile, BundleError) as exc:
            raise ComponentBuildError(f"bundle zip {zip_path} is not a usable edge bundle: {exc}") from None
    manifest = bundle.manifest
    if manifest.version != str(version):
        raise ComponentBuildError(f"{zip_path} holds bundle version {manifest.version!r}, not registry version {version}")
    return {"name": manifest.name, "version": manifest.version, "format_version": manifest.format_version,
            "labels": list(manifest.labels)}


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
    path.write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")
    return path


def build_components(version: int, *, store: str | Path | None = None, group: str | None = None,
                     out: str | Path | None = None, bucket: str = "BUCKET_NAME", app_version: str | None = None,
                     wheel: str | Path | None = None, require_approved: bool = False,
                     projects_dir: str | Path = PROJECTS_DIR) -> BuildResult:
    """Build both components from registry version ``version`` (see the module docstring)."""
    from edge_runtime import __version__ as runtime_version
    from edge_runtime.bundle import FORMAT_VERSION

    from .params import load_params
    from .registry import open_registry
    from .store import Store

    group = group or load_params().model_package_group
    local = Store.at(store)
    if not isinstance(local, Store):
        raise ComponentBuildError("building components needs a local store (the local registry is a file in it)")
    with open_registry("local", store=local, create=False) as registry:
        package = registry.get(group, int(version))
    if require_approved and package.approval_status.value != "Approved":
        raise ComponentBuildError(f"{package.ref} is {package.approval_status.value}, not Approved")
    if "bundle_zip" not in package.artifacts:
        raise ComponentBuildError(f"{package.ref} has no 'bundle_zip' artifact (was it packaged?)")
    bundle_zip = _path_from_uri(package.artifacts["bundle_zip"])
    bundle_info = _check_bundle_zip(bundle_zip, int(version))

    model_project = load_project(Path(projects_dir) / "model")
    app_project = load_project(Path(projects_dir) / "app")
    for project in (model_project, app_project):
        problems = validate_recipe(project.template, template=True)
        if problems:
            raise ComponentBuildError(f"template {project.root}/recipe.json is invalid: " + "; ".join(problems))
    dependency = app_project.template.get("ComponentDependencies", {}).get(model_project.name)
    if dependency is None:
        raise ComponentBuildError(f"{app_project.name} does not depend on {model_project.name}")

    out_dir = Path(out) if out is not None else local.base / "greengrass" / str(version)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model_version = f"{FORMAT_VERSION}.0.{int(version)}"
    app_version = app_version or runtime_version
    if not _SEMVER.match(app_version):
        raise ComponentBuildError(f"app version {app_version!r} is not a semantic version")

    result = BuildResult(out_dir, {"group": package.group, "version": package.version,
                                   "approval_status": package.approval_status.value, "stage": package.stage.value,
                                   "bundle": bundle_info})
    # model component: the registry's zip, byte for byte
    model_dir = out_dir / "artifacts" / model_project.name / model_version
    model_dir.mkdir(parents=True)
    model_zip = model_dir / model_project.zip_name
    shutil.copyfile(bundle_zip, model_zip)
    model_recipe = render_recipe(model_project, version=model_version, artifacts={model_zip.name: model_zip},
                                 bucket=bucket)
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
                                     _write_recipe(out_dir, render_recipe(app_project, version=app_version,
                                                                          artifacts={app_zip.name: app_zip},
                                                                          bucket=bucket)), [app_zip],
                                     wheel=wheel_path.name, depends_on={model_project.name: dependency}))
    (out_dir / "build.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return result


def _record(role: str, project: GreengrassProject, version: str, recipe_path: Path, artifacts: Sequence[Path],
            **extra: Any) -> dict[str, Any]:
    recipe = json.loads(recipe_path.read_text(encoding="utf-8"))
    uris = {a["Uri"].rsplit("/", 1)[-1]: a["Uri"] for m in recipe["Manifests"] for a in m.get("Artifacts", [])}
    return {"role": role, "name": project.name, "version": version, "recipe": str(recipe_path),
            "recipe_bytes": recipe_path.stat().st_size,
            "artifacts": [{"path": str(a), "uri": uris[a.name], "sha256": digest_b64(a)[1], "bytes": a.stat().st_size}
                          for a in artifacts], **extra}


# --- command line -----------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloud.greengrass",
                                     description="Build the Greengrass v2 model and app components.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build both components from a registered model version")
    b.add_argument("--version", type=int, required=True, help="model package version in the registry")
    b.add_argument("--store", default=None, help="local store (default: .store)")
    b.add_argument("--group", default=None, help="model package group (default: params.json's)")
    b.add_argument("--out", default=None, help="output directory (default: <store>/slm-intents/greengrass/<version>)")
    b.add_argument("--bucket", default="BUCKET_NAME", help="S3 bucket in the artifact URIs (default: GDK's placeholder)")
    b.add_argument("--app-version", default=None, help="app component version (default: the edge_runtime version)")
    b.add_argument("--wheel", default=None, help="use this slm_intents wheel instead of building one")
    b.add_argument("--require-approved", action="store_true", help="refuse versions that are not Approved")
    args = parser.parse_args(argv)
    try:
        result = build_components(args.version, store=args.store, group=args.group, out=args.out, bucket=args.bucket,
                                  app_version=args.app_version, wheel=args.wheel,
                                  require_approved=args.require_approved)
    except CloudError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    reg = result.registry
    print(f"registry {reg['group']} v{reg['version']} ({reg['approval_status']}, {reg['stage']})")
    for c in result.components:
        for a in c["artifacts"]:
            print(f"  {c['name']} {c['version']}: {a['uri']}  sha256 {a['sha256']}  ({a['bytes']} bytes)")
        print(f"    recipe {c['recipe']} ({c['recipe_bytes']} bytes)")
    if reg["approval_status"] != "Approved":
        print(f"note: this version is {reg['approval_status']}; approve it before a fleet deployment")
    model, app = result.component("model"), result.component("app")
    print("local deployment on a core device:\n"
          f"  sudo /greengrass/v2/bin/greengrass-cli deployment create --recipeDir {result.out / 'recipes'} "
          f"--artifactDir {result.out / 'artifacts'} --merge \"{model['name']}={model['version']}\" "
          f"--merge \"{app['name']}={app['version']}\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
