"""The edge bundle (contract 1): a directory with ``manifest.json`` and the files it lists.

The bundle layout lives here and only here: the cloud side writes bundles with :func:`write_bundle`,
the device reads them with :meth:`Bundle.load`, which verifies the format version and every file's
sha256 before anything is handed to a backend.

Example::

    bundle = Bundle.load("edge/3")
    bundle.manifest.labels          # ('AddToPlaylist', ...)
    bundle.path_of(bundle.manifest.tokenizer)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import (
    BundleNotFoundError,
    IntegrityError,
    ManifestError,
    MissingFileError,
    UnsupportedFormatError,
)

__all__ = ["BUNDLE_FORMAT", "FORMAT_VERSION", "MANIFEST_NAME", "Manifest", "Bundle", "write_bundle", "zip_bundle", "sha256_file"]

BUNDLE_FORMAT = "slm-intents-edge-bundle"
#: Bumped only when a reader of the old version would misread a new bundle.
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = frozenset({1})
MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` holds. Unknown keys are kept in ``extra`` so newer writers stay readable."""

    name: str
    version: str
    labels: tuple[str, ...]
    max_length: int
    tokenizer: str
    #: backend name -> its entry; ``onnxruntime`` has ``file`` and ``quantization``, ``dlr`` has ``dir``.
    backends: Mapping[str, Mapping[str, Any]]
    #: bundle-relative path -> {"sha256": hex, "bytes": size}
    files: Mapping[str, Mapping[str, Any]]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    lineage: Mapping[str, Any] = field(default_factory=dict)
    #: reference statistics for drift detection (label distribution, confidence/length histograms, ...)
    reference: Mapping[str, Any] = field(default_factory=dict)
    created_at: str = ""
    format: str = BUNDLE_FORMAT
    format_version: int = FORMAT_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = list(self.labels)
        extra = data.pop("extra")
        return {**extra, **data}

    @classmethod
    def from_dict(cls, data: Any, source: str = MANIFEST_NAME) -> "Manifest":
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: expected a JSON object, got {type(data).__name__}")
        fmt = data.get("format")
        if fmt != BUNDLE_FORMAT:
            raise UnsupportedFormatError(f"{source}: format {fmt!r} is not {BUNDLE_FORMAT!r}")
        version = data.get("format_version")
        if version not in SUPPORTED_FORMAT_VERSIONS:
            raise UnsupportedFormatError(
                f"{source}: format_version {version!r} is not supported by this runtime "
                f"(it reads {sorted(SUPPORTED_FORMAT_VERSIONS)}); upgrade edge_runtime or rebuild the bundle"
            )
        expected: dict[str, type | tuple[type, ...]] = {
            "name": str, "version": str, "labels": list, "max_length": int, "tokenizer": str,
            "backends": dict, "files": dict,
        }
        for key, typ in expected.items():
            if key not in data:
                raise ManifestError(f"{source}: required field {key!r} is missing")
            if not isinstance(data[key], typ) or isinstance(data[key], bool):
                raise ManifestError(f"{source}: field {key!r} must be {typ.__name__}, got {type(data[key]).__name__}")
        labels = data["labels"]
        if not labels or not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels):
            raise ManifestError(f"{source}: 'labels' must be a non-empty list of distinct strings")
        if data["max_length"] < 2:
            raise ManifestError(f"{source}: 'max_length' must be >= 2")
        for rel, entry in data["files"].items():
            if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
                raise ManifestError(f"{source}: files[{rel!r}] needs a 'sha256' string")
            _check_relative(rel, source)
        if data["tokenizer"] not in data["files"]:
            raise ManifestError(f"{source}: tokenizer {data['tokenizer']!r} is not listed in 'files'")
        for backend, entry in data["backends"].items():
            if not isinstance(entry, dict):
                raise ManifestError(f"{source}: backends[{backend!r}] must be an object")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["labels"] = tuple(labels)
        for optional in ("metrics", "lineage", "reference"):
            if not isinstance(kwargs.get(optional, {}), dict):
                raise ManifestError(f"{source}: field {optional!r} must be an object")
        return cls(**kwargs, extra={k: v for k, v in data.items() if k not in known})


def _check_relative(rel: str, source: str) -> None:
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts or not rel:
        raise ManifestError(f"{source}: file path {rel!r} must be relative and inside the bundle")


@dataclass(frozen=True)
class Bundle:
    """A bundle directory whose manifest has been parsed (and, by default, verified)."""

    root: Path
    manifest: Manifest

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, verify: bool = True) -> "Bundle":
        """Read ``manifest.json`` under ``path``; with ``verify`` check every listed file's sha256.

        Raises a :class:`~edge_runtime.errors.BundleError` subclass naming what is wrong.
        """
        root = Path(path)
        manifest_path = root / MANIFEST_NAME
        if not root.is_dir():
            raise BundleNotFoundError(f"bundle directory not found: {root}")
        if not manifest_path.is_file():
            raise BundleNotFoundError(f"no {MANIFEST_NAME} in bundle directory {root}")
        try:
            data = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{manifest_path}: not valid JSON ({exc})") from None
        bundle = cls(root, Manifest.from_dict(data, source=str(manifest_path)))
        if verify:
            bundle.verify()
        return bundle

    def path_of(self, rel: str) -> Path:
        return self.root / rel

    def verify(self) -> None:
        """Check that every file in the manifest exists and has its recorded sha256."""
        for rel, entry in self.manifest.files.items():
            path = self.root / rel
            if not path.is_file():
                raise MissingFileError(f"bundle {self.root}: file {rel!r} listed in the manifest is missing")
            size = entry.get("bytes")
            if isinstance(size, int) and path.stat().st_size != size:
                raise IntegrityError(
                    f"bundle {self.root}: {rel!r} has {path.stat().st_size} bytes, manifest says {size} (truncated?)"
                )
            actual = sha256_file(path)
            if actual != entry["sha256"]:
                raise IntegrityError(
                    f"bundle {self.root}: sha256 of {rel!r} is {actual[:12]}..., manifest says {entry['sha256'][:12]}..."
                )

    def backend_entry(self, name: str) -> Mapping[str, Any] | None:
        return self.manifest.backends.get(name)


def write_bundle(
    out_dir: str | os.PathLike[str],
    *,
    files: Mapping[str, str | os.PathLike[str]],
    name: str,
    version: str,
    labels: list[str] | tuple[str, ...],
    max_length: int,
    tokenizer: str,
    backends: Mapping[str, Mapping[str, Any]],
    metrics: Mapping[str, Any] | None = None,
    lineage: Mapping[str, Any] | None = None,
    reference: Mapping[str, Any] | None = None,
    created_at: str = "",
    extra: Mapping[str, Any] | None = None,
) -> Bundle:
    """Copy ``files`` (bundle-relative name -> source path) into ``out_dir`` and write the manifest.

    The directory is assembled next to its destination and renamed into place, so a reader never
    sees a half-written bundle. Returns the verified :class:`Bundle`.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        entries: dict[str, dict[str, Any]] = {}
        for rel, src in sorted(files.items()):
            _check_relative(rel, "write_bundle")
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            entries[rel] = {"sha256": sha256_file(dest), "bytes": dest.stat().st_size}
        manifest = Manifest(
            name=name, version=str(version), labels=tuple(labels), max_length=int(max_length),
            tokenizer=tokenizer, backends=dict(backends), files=entries, metrics=dict(metrics or {}),
            lineage=dict(lineage or {}), reference=dict(reference or {}), created_at=created_at,
            extra=dict(extra or {}),
        )
        # Round-trip through the reader so a writer bug cannot produce a bundle the device refuses.
        Manifest.from_dict(json.loads(json.dumps(manifest.to_dict())), source="write_bundle")
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Bundle.load(out)


def zip_bundle(bundle_dir: str | os.PathLike[str], zip_path: str | os.PathLike[str]) -> Path:
    """Zip a bundle directory (manifest at the archive root), as the Greengrass model artifact."""
    root = Path(bundle_dir)
    target = Path(zip_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                # Fixed timestamps make the zip (and its sha256) reproducible.
                info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                with open(path, "rb") as src, zf.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
    os.replace(tmp, target)
    return target
