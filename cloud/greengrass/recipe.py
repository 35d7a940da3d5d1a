"""The Greengrass v2 recipe model: GDK projects, rendering, and the one validator of recipes and versions.

Every recipe this project builds (:mod:`cloud.greengrass.build`) or publishes (:mod:`cloud.aws.greengrass`)
goes through :func:`validate_recipe`; every component version through :func:`check_version`. The rules, each
from the Greengrass documentation or the nuclei's sources:

- size: at most :data:`MAX_RECIPE_BYTES` (16,000) bytes, measured on :func:`recipe_bytes`, the exact bytes
  written to ``recipes/`` and sent as ``inlineRecipe``. The Greengrass developer guide names no figure; the
  limit is the one AWS's own Greengrass Development Kit enforces before it publishes ("Greengrass only supports
  recipe files up to 16 kB": aws-greengrass/aws-greengrass-gdk-cli, ``gdk/common/consts.py``
  ``MAX_RECIPE_FILE_SIZE_BYTES = 16000``, pull requests #235 and #243).
- versions: semantic versions ``MAJOR.MINOR.PATCH[-pre][+build]`` (semver.org 2.0.0, no leading zeros), at most
  64 characters (``ComponentVersionString`` of the GreengrassV2 API model).
- Nucleus Lite (aws-greengrass-lite ``docs/RECIPE_SUPPORT_CHANGES.md``): case-sensitive keys, linux manifests
  with ``runtime`` ``*`` or ``aws_nucleus_lite``, no ``shutdown``/``recover``/``Skipif``, only the variables
  :data:`PLAIN_VARIABLES` and top-level ``{configuration:/Key}``, and no recipe variables in component
  configuration (so none in ``accessControl``: see :func:`_resource_problem`).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..errors import ComponentBuildError, RecipeError

__all__ = [
    "GreengrassProject",
    "PROJECTS_DIR",
    "MAX_RECIPE_BYTES",
    "MAX_VERSION_CHARS",
    "SUPPORTED_ARCHITECTURES",
    "component_pin",
    "load_project",
    "load_recipe",
    "render_recipe",
    "recipe_bytes",
    "validate_recipe",
    "greengrass_problems",
    "check_recipe",
    "check_version",
    "is_version",
    "recipe_variables",
    "digest_b64",
]

PROJECTS_DIR = Path(__file__).resolve().parents[2] / "greengrass"
#: Greengrass takes recipes up to 16,000 bytes (see the module docstring for the source).
MAX_RECIPE_BYTES = 16_000
#: ``ComponentVersionString``: 1-64 characters.
MAX_VERSION_CHARS = 64
RECIPE_FORMAT_VERSION = "2020-01-25"
#: Manifests every recipe must have (Greengrass ``architecture`` names).
SUPPORTED_ARCHITECTURES = ("aarch64", "amd64")
#: GDK build placeholders allowed in templates.
GDK_PLACEHOLDERS = ("{COMPONENT_NAME}", "{COMPONENT_VERSION}", "{COMPONENT_AUTHOR}")
#: Recipe variables Nucleus Lite substitutes (no component-name prefixes, ``configuration:`` only top-level keys).
PLAIN_VARIABLES = frozenset({"artifacts:path", "artifacts:decompressedPath", "work:path", "kernel:rootPath",
                             "iot:thingName"})
#: IPC services whose resources are MQTT topic filters (``+``/``#`` work); the others match plain strings with
#: ``*`` globs (the nucleus' AuthorizationHandler: ResourceLookupPolicy MQTT_STYLE vs STANDARD).
MQTT_STYLE_SERVICES = frozenset({"aws.greengrass.ipc.mqttproxy"})
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


def is_version(version: Any) -> bool:
    """True for a component version Greengrass takes: ``1.0.3``, ``2.0.0-rc.1+build.5``."""
    return isinstance(version, str) and len(version) <= MAX_VERSION_CHARS and bool(_SEMVER.match(version))


def check_version(version: Any, where: str = "ComponentVersion") -> str:
    """``version`` when :func:`is_version`, else :class:`RecipeError` naming ``where``."""
    if not is_version(version):
        raise RecipeError(f"{where} {version!r} is not a semantic version MAJOR.MINOR.PATCH[-pre][+build] of at "
                          f"most {MAX_VERSION_CHARS} characters (NEXT_PATCH and friends are GDK's, resolved "
                          "when building)")
    return str(version)


def recipe_bytes(recipe: Mapping[str, Any]) -> bytes:
    """The bytes of a recipe as written to ``recipes/`` and published (the size limit applies to these)."""
    return json.dumps(recipe, indent=2).encode("utf-8")


def load_recipe(path: str | Path) -> dict[str, Any]:
    """A recipe file (JSON, or YAML with PyYAML installed); :class:`RecipeError` when unreadable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise RecipeError(f"{path}: reading YAML recipes needs PyYAML (pip install pyyaml)") from None
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # yaml.YAMLError and JSONDecodeError are ValueErrors
        raise RecipeError(f"{path}: unreadable recipe: {exc}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping")
    return data


def check_recipe(recipe: Any, where: str) -> tuple[str, str]:
    """``(name, version)`` of a recipe Greengrass takes (:func:`greengrass_problems`: any recipe, GDK-built ones
    included), else :class:`RecipeError` listing every problem. This project's own recipes get all of
    :func:`validate_recipe` when they are built."""
    problems = greengrass_problems(recipe)
    if problems:
        raise RecipeError(f"{where}: the recipe is invalid: " + "; ".join(problems))
    return recipe["ComponentName"], recipe["ComponentVersion"]


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


def greengrass_problems(recipe: Any, *, template: bool = False) -> list[str]:
    """What Greengrass itself refuses in any recipe: not an object, a missing required key, the format version,
    the component name, the version rule and the size limit (the checks every published recipe gets)."""
    if not isinstance(recipe, dict):
        return [f"a recipe is a JSON object, got {type(recipe).__name__}"]
    p: list[str] = []
    size = len(recipe_bytes(recipe))
    if size > MAX_RECIPE_BYTES:
        p.append(f"recipe has {size} bytes; Greengrass takes at most {MAX_RECIPE_BYTES}")
    for key in ("RecipeFormatVersion", "ComponentName", "ComponentVersion", "Manifests"):
        if key not in recipe:
            p.append(f"required key {key!r} is missing")
    if recipe.get("RecipeFormatVersion", RECIPE_FORMAT_VERSION) != RECIPE_FORMAT_VERSION:
        p.append(f"RecipeFormatVersion must be {RECIPE_FORMAT_VERSION!r}")
    name, version = recipe.get("ComponentName", ""), recipe.get("ComponentVersion", "")
    if not (template and name == "{COMPONENT_NAME}") and not (isinstance(name, str) and _NAME.match(name)):
        p.append(f"ComponentName {name!r} must be 1-128 letters, digits, '.', '_' or '-'")
    if not (template and version == "{COMPONENT_VERSION}") and not is_version(version):
        p.append(f"ComponentVersion {version!r} is not a semantic version MAJOR.MINOR.PATCH[-pre][+build] of at "
                 f"most {MAX_VERSION_CHARS} characters (NEXT_PATCH and friends are GDK's, resolved when building)")
    return p


def validate_recipe(recipe: Any, *, template: bool = False) -> list[str]:
    """Problems of a recipe against the recipe format and Nucleus Lite's rules; empty when it is fine.

    Checks field names (case-sensitive) and types, the recipe format version, semantic versions, the manifests
    (linux, ``runtime`` ``*`` or ``aws_nucleus_lite``, one per supported architecture), lifecycle steps (no
    ``shutdown``/``recover``/``Skipif``, no ``RequiresPrivilege``), artifacts (URI, Digest, Unarchive,
    Permission), dependencies, ``accessControl`` (known IPC services, no ``*`` alone, no recipe variables,
    wildcards as each IPC service matches them), the recipe variables used (including that every
    ``{configuration:/Key}`` exists) and the size limit. ``template=True`` accepts
    the GDK placeholders instead of a name, version and digests.
    """
    p = greengrass_problems(recipe, template=template)
    if not isinstance(recipe, dict):
        return p
    for key in recipe:
        if key not in _TOP_KEYS:
            p.append(f"unknown top-level key {key!r} (keys are case-sensitive: {sorted(_TOP_KEYS)})")
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
                elif key == "resources":
                    p += [f"policy {pid!r}: resource {r!r}: {why}" for r in items
                          if (why := _resource_problem(service, r))]
    return p


def _resource_problem(service: str, resource: str) -> str:
    """Why an ``accessControl`` resource would not match what it means to on a device ("" when it is fine).

    The classic nucleus substitutes recipe variables in component configuration only from 2.6.0 with the
    nucleus option ``interpolateComponentConfiguration: true`` (default false; nucleus ``KernelConfigResolver``),
    and Nucleus Lite's released versions (up to 2.6.0) never do: a ``{iot:thingName}`` there stays the literal
    string, so the subscribe fails with UnauthorizedError and the component ends BROKEN. The mqttproxy matches
    resources as MQTT topic filters (``+``, ``#``) and ``*`` globs; local pub/sub only as strings with ``*``
    globs, where ``+`` and ``#`` are plain characters (nucleus ``AuthorizationHandler.ResourceLookupPolicy``,
    ``WildcardTrie``; Lite ``ggipcd`` ``ipc_authz.c`` / ``mqttproxy.c``).
    """
    if _VARIABLE.search(resource):
        return ("recipe variables are not substituted in accessControl on a default nucleus or on Nucleus Lite; "
                "use a wildcard for the thing segment (the core device's IoT policy scopes it to the thing)")
    if service in MQTT_STYLE_SERVICES:
        levels = resource.split("/")
        if any(("+" in lv and lv != "+") or ("#" in lv and lv != "#") for lv in levels) or "#" in levels[:-1]:
            return "MQTT wildcards must fill a whole level ('#' only the last)"
    elif "+" in resource or "#" in resource:
        return "local publish/subscribe matches '+' and '#' literally; use '*'"
    return ""


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
