"""What a Greengrass nucleus does for a local deployment, done for real without one.

``greengrass-cli deployment create --recipeDir R --artifactDir A --merge name=version --update-config ...`` makes
the nucleus: pick the recipe's manifest for this platform, copy each artifact from ``A/<name>/<version>/`` into
``<root>/packages/artifacts/<name>/<version>/`` checking its Digest, unpack ``Unarchive: ZIP`` artifacts into
``<root>/packages/artifacts-unarchived/<name>/<version>/<zip name>/``, merge the configuration, substitute the
recipe variables, then run ``install`` and ``run`` in the component's work folder ``<root>/work/<name>`` with the
step's ``Setenv``. :class:`LocalNucleus` does exactly that, and refuses any variable Nucleus Lite would not
substitute, so a recipe that passes here uses only what both nuclei support.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

GG_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "aarch64", "arm64": "aarch64"}.get(platform.machine(), "")
_VARIABLE = re.compile(r"\{([A-Za-z]+:[^{}\s]*)\}")


def _config_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


@dataclass
class Deployed:
    name: str
    version: str
    manifest: Mapping[str, Any]
    config: Mapping[str, Any]
    variables: Mapping[str, str]
    work: Path

    def substitute(self, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            var = match.group(1)
            if var in self.variables:
                return self.variables[var]
            if var.startswith("configuration:/"):
                node: Any = self.config
                for part in var[len("configuration:/"):].split("/"):
                    if not isinstance(node, Mapping) or part not in node:
                        raise KeyError(f"{self.name}: {{{var}}} is not in the configuration")
                    node = node[part]
                return _config_text(node)
            raise KeyError(f"{self.name}: recipe variable {{{var}}} is not one the nucleus substitutes")
        return _VARIABLE.sub(replace, text)

    def step(self, name: str) -> tuple[str, dict[str, str], float]:
        """``(script, environment, timeout)`` of a lifecycle step, variables substituted."""
        lifecycle = self.manifest.get("Lifecycle", {})
        body = lifecycle[name]
        if isinstance(body, str):
            body = {"Script": body}
        env = {k: self.substitute(v) for k, v in {**lifecycle.get("Setenv", {}), **body.get("Setenv", {})}.items()}
        return self.substitute(body["Script"]), env, float(body.get("Timeout", 120))


class LocalNucleus:
    """A Greengrass root folder (``<root>/packages``, ``<root>/work``) and the deployment steps above."""

    def __init__(self, root: Path, thing: str) -> None:
        self.root = Path(root)
        self.thing = thing
        for sub in ("packages/artifacts", "packages/artifacts-unarchived", "work"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def deploy(self, recipe_dir: Path, artifact_dir: Path, name: str, version: str,
               config: Mapping[str, Any] | None = None) -> Deployed:
        recipe = json.loads((Path(recipe_dir) / f"{name}-{version}.json").read_text())
        assert recipe["ComponentName"] == name and recipe["ComponentVersion"] == version
        manifest = next(m for m in recipe["Manifests"]
                        if m["Platform"].get("os") == "linux" and m["Platform"].get("architecture") == GG_ARCH
                        and m["Platform"].get("runtime") in ("*", "aws_nucleus_lite"))
        artifacts = self.root / "packages" / "artifacts" / name / version
        unarchived = self.root / "packages" / "artifacts-unarchived" / name / version
        artifacts.mkdir(parents=True, exist_ok=True)
        unarchived.mkdir(parents=True, exist_ok=True)
        for artifact in manifest.get("Artifacts", []):
            filename = artifact["Uri"].rsplit("/", 1)[-1]
            target = artifacts / filename
            shutil.copyfile(Path(artifact_dir) / name / version / filename, target)
            digest = base64.b64encode(hashlib.sha256(target.read_bytes()).digest()).decode()
            if artifact.get("Algorithm") != "SHA-256" or digest != artifact.get("Digest"):
                raise ValueError(f"{name}: integrity check of {filename} failed")
            if artifact.get("Unarchive") == "ZIP":
                with zipfile.ZipFile(target) as zf:
                    zf.extractall(unarchived / Path(filename).stem)
        merged = {**recipe.get("ComponentConfiguration", {}).get("DefaultConfiguration", {}), **(config or {})}
        work = self.root / "work" / name
        work.mkdir(parents=True, exist_ok=True)
        variables = {"artifacts:path": str(artifacts), "artifacts:decompressedPath": str(unarchived),
                     "work:path": str(work), "kernel:rootPath": str(self.root), "iot:thingName": self.thing}
        return Deployed(name, version, manifest, merged, variables, work)

    def environment(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_INTENTS_", "PYTEST", "VIRTUAL_ENV"))}
        env["AWS_IOT_THING_NAME"] = self.thing  # set by Greengrass for every component
        env.update(extra)
        return env

    def install(self, component: Deployed) -> subprocess.CompletedProcess[str]:
        script, env, timeout = component.step("install")
        proc = subprocess.run(["bash", "-c", script], cwd=component.work, env=self.environment(env),
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{component.name} install failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                               f"{proc.stderr[-4000:]}")
        return proc

    def start(self, component: Deployed, log_path: Path) -> subprocess.Popen[bytes]:
        script, env, _ = component.step("run")
        log = open(log_path, "wb")
        try:
            return subprocess.Popen(["bash", "-c", script], cwd=component.work, env=self.environment(env),
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
