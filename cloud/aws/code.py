"""The source bundle the SageMaker jobs run: the same ``cloud`` and ``edge_runtime`` modules as the local run.

``sourcedir.tar.gz`` holds ``cloud/``, ``edge_runtime/``, ``gx/``, ``pipelines/params.json`` (the params the
pipeline was built with: ``--params``, with its ``--set`` overrides applied; every job reads it),
``requirements.txt`` (the project's runtime and ``cloud`` dependencies, without torch, which the PyTorch container
image provides) and ``sm_entry.py`` (:mod:`cloud.aws.entry`) at its root. Its
digest names its S3 folder, ``s3://<bucket>/slm-intents/code/<digest>/``, so the pipeline definition is a pure
function of the checkout and builds offline; ``upsert`` uploads the bundle before it upserts the pipeline.

The training job also writes the inference handler into its model directory (:func:`write_serving_code`):
``code/inference.py`` (:mod:`cloud.inference.handler`), ``code/cloud/``, ``code/edge_runtime/`` and
``code/requirements.txt``. The SageMaker PyTorch serving container reads user code from ``/opt/ml/model/code``
only, i.e. from inside ``model.tar.gz`` (sagemaker-inference-toolkit ``environment.code_dir``; an S3
``SAGEMAKER_SUBMIT_DIRECTORY`` is not downloaded by it), so the registered training artifact serves as it is.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

from .errors import AwsError, DependencyMissing

__all__ = ["SourceBundle", "collect_source", "ENTRY_SCRIPT", "TARBALL", "container_requirements", "INFERENCE_SCRIPT",
           "SERVING_CODE_DIR", "SERVING_ENVIRONMENT", "write_serving_code"]

REPO = Path(__file__).resolve().parents[2]
ENTRY_SCRIPT = "sm_entry.py"
TARBALL = "sourcedir.tar.gz"
_DIRS = ("cloud", "edge_runtime", "gx")
_SKIP_PARTS = {"__pycache__", "uncommitted", ".pytest_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo")
# The container image brings its own torch (a CUDA/CPU build matching the image), so it is not reinstalled.
_PROVIDED_BY_IMAGE = {"torch"}
#: The module the serving container imports (``SAGEMAKER_PROGRAM``) and the folder of model.tar.gz it lies in.
INFERENCE_SCRIPT = "inference.py"
SERVING_CODE_DIR = "code"
_INFERENCE_SHIM = (b'"""SageMaker inference entry (SAGEMAKER_PROGRAM): the handler of cloud.inference.handler."""\n\n'
                   b"from cloud.inference.handler import input_fn, model_fn, output_fn, predict_fn  # noqa: F401\n")
#: What the serving packages' modules need beyond the PyTorch inference image (numpy, psutil, torch are in it).
_SERVING_PACKAGES = ("transformers", "tokenizers", "safetensors")
#: The environment of the registered model's container: the module to import and where it lies (the value the
#: SageMaker Python SDK sets for code packed into model.tar.gz), INFO logs.
SERVING_ENVIRONMENT = {"SAGEMAKER_PROGRAM": INFERENCE_SCRIPT,
                       "SAGEMAKER_SUBMIT_DIRECTORY": f"/opt/ml/model/{SERVING_CODE_DIR}",
                       "SAGEMAKER_CONTAINER_LOG_LEVEL": "20"}


@dataclass(frozen=True)
class SourceBundle:
    """The files of the source bundle (archive name -> content) and their digest."""

    files: Mapping[str, bytes]
    digest: str

    def tarball(self) -> bytes:
        """The ``sourcedir.tar.gz`` bytes; reproducible (sorted members, fixed times and owners)."""
        buf = io.BytesIO()
        # mtime=0 in the gzip header too, so the same files give the same bytes.
        import gzip

        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
            for name in sorted(self.files):
                data = self.files[name]
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    @property
    def entry_script(self) -> bytes:
        return self.files[ENTRY_SCRIPT]


def _pyproject(repo: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        raise DependencyMissing("building the SageMaker source bundle reads pyproject.toml with tomllib "
                                "(Python 3.11+)") from None
    path = repo / "pyproject.toml"
    if not path.is_file():
        raise AwsError(f"{path} not found: the SageMaker source bundle is built from a checkout of the repository")
    return tomllib.loads(path.read_text(encoding="utf-8"))


def container_requirements(repo: Path = REPO) -> list[str]:
    """The project's dependencies and its ``cloud`` extra, less what the container image provides."""
    project = _pyproject(repo)["project"]
    wanted = list(project.get("dependencies", [])) + list(project.get("optional-dependencies", {}).get("cloud", []))
    out = []
    for req in wanted:
        name = re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower()
        if name not in _PROVIDED_BY_IMAGE and req not in out:
            out.append(req)
    return out


def _tree(repo: Path, top: str) -> Iterator[tuple[str, Path]]:
    """``(archive name, path)`` of the files under ``repo/top``, caches and bytecode left out."""
    root = repo / top
    if not root.is_dir():
        raise AwsError(f"{root} not found: the SageMaker source bundle is built from a checkout")
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(repo)
        if not (_SKIP_PARTS.intersection(rel.parts) or path.suffix in _SKIP_SUFFIXES):
            yield rel.as_posix(), path


def collect_source(repo: Path = REPO, params_path: str | Path | None = None,
                   params_json: bytes | None = None) -> SourceBundle:
    """Read the files of the bundle from a checkout; ``params_path`` replaces ``pipelines/params.json``, and
    ``params_json`` (the effective params of a build with ``--set`` overrides) replaces both."""
    files: dict[str, bytes] = {}
    for top in _DIRS:
        for rel, path in _tree(repo, top):
            files[rel] = path.read_bytes()
    params = Path(params_path) if params_path else repo / "pipelines" / "params.json"
    files["pipelines/params.json"] = params_json if params_json is not None else params.read_bytes()
    files["requirements.txt"] = ("\n".join(container_requirements(repo)) + "\n").encode()
    files[ENTRY_SCRIPT] = (repo / "cloud" / "aws" / "entry.py").read_bytes()
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return SourceBundle(files=files, digest=digest.hexdigest()[:16])


def _installed_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def write_serving_code(model_dir: str | Path, root: Path = REPO) -> Path:
    """Write ``model_dir/code/``: the inference entry, the ``cloud`` and ``edge_runtime`` packages of ``root``, and
    ``requirements.txt`` pinning the versions of transformers, tokenizers and safetensors installed here (the ones
    that trained and saved the checkpoint, so the endpoint loads it with the same code). Returns the folder.
    """
    out = Path(model_dir) / SERVING_CODE_DIR
    for top in ("cloud", "edge_runtime"):
        for rel, path in _tree(root, top):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(path.read_bytes())
    (out / INFERENCE_SCRIPT).write_bytes(_INFERENCE_SHIM)
    pins = [f"{name}=={v}" for name in _SERVING_PACKAGES if (v := _installed_version(name))]
    (out / "requirements.txt").write_text("\n".join(pins) + "\n", encoding="utf-8")
    return out
