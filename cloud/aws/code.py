"""The source bundle the SageMaker jobs run: the same ``cloud`` and ``edge_runtime`` modules as the local run.

``sourcedir.tar.gz`` holds ``cloud/``, ``edge_runtime/``, ``gx/``, ``pipelines/params.json`` (the params the
pipeline was built with), ``requirements.txt`` (the project's runtime and ``cloud`` dependencies, without torch,
which the PyTorch container image provides) and ``sm_entry.py`` (:mod:`cloud.aws.entry`) at its root. Its
digest names its S3 folder, ``s3://<bucket>/slm-intents/code/<digest>/``, so the pipeline definition is a pure
function of the checkout and builds offline; ``upsert`` uploads the bundle before it upserts the pipeline.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .errors import AwsError, DependencyMissing

__all__ = ["SourceBundle", "collect_source", "ENTRY_SCRIPT", "TARBALL", "container_requirements"]

REPO = Path(__file__).resolve().parents[2]
ENTRY_SCRIPT = "sm_entry.py"
TARBALL = "sourcedir.tar.gz"
_DIRS = ("cloud", "edge_runtime", "gx")
_SKIP_PARTS = {"__pycache__", "uncommitted", ".pytest_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo")
# The container image brings its own torch (a CUDA/CPU build matching the image), so it is not reinstalled.
_PROVIDED_BY_IMAGE = {"torch"}


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


def collect_source(repo: Path = REPO, params_path: str | Path | None = None) -> SourceBundle:
    """Read the files of the bundle from a checkout; ``params_path`` replaces ``pipelines/params.json``."""
    files: dict[str, bytes] = {}
    for top in _DIRS:
        root = repo / top
        if not root.is_dir():
            raise AwsError(f"{root} not found: the SageMaker source bundle is built from a checkout")
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(repo)
            if _SKIP_PARTS.intersection(rel.parts) or path.suffix in _SKIP_SUFFIXES:
                continue
            files[rel.as_posix()] = path.read_bytes()
    params = Path(params_path) if params_path else repo / "pipelines" / "params.json"
    files["pipelines/params.json"] = params.read_bytes()
    files["requirements.txt"] = ("\n".join(container_requirements(repo)) + "\n").encode()
    files[ENTRY_SCRIPT] = (repo / "cloud" / "aws" / "entry.py").read_bytes()
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return SourceBundle(files=files, digest=digest.hexdigest()[:16])
