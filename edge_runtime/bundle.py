"""The edge bundle (contract 1): a directory with ``manifest.json`` and the files it lists.

The bundle layout lives here and only here: the cloud side writes bundles with :func:`write_bundle`,
the device reads them with :meth:`Bundle.load`, which verifies the format version, that the directory holds
exactly what the manifest lists, and every file's sha256 before anything is handed to a backend.

The whole tree is accounted for, because a backend's library may load more than the file it was pointed at
(DLR looks for ``libdlr.so`` beside the model): besides ``manifest.json`` and ``manifest.sig``, every entry is a
listed regular file or a directory that holds one; an unlisted file or directory, a symlink, a device, a FIFO or
a socket is an error that names it. Every path the manifest names (``files``, ``tokenizer``, a backend's ``file`` or
``dir``) is relative, inside the bundle and listed. :func:`stage_bundle` copies a bundle into a private directory
(listed regular files only, never following a link, never blocking on a special file), so what is verified is
what is loaded.

Example::

    bundle = Bundle.load("edge/3")
    bundle.manifest.labels          # ('AddToPlaylist', ...)
    bundle.path_of(bundle.manifest.tokenizer)
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Mapping

from .errors import (
    BundleNotFoundError,
    IntegrityError,
    ManifestError,
    MissingFileError,
    UnsupportedFormatError,
)

__all__ = ["BUNDLE_FORMAT", "FORMAT_VERSION", "MANIFEST_NAME", "SIGNATURE_NAME", "MAX_LENGTH_LIMIT", "Manifest",
           "Bundle", "write_bundle", "zip_bundle", "stage_bundle", "read_manifest", "account_for_tree", "open_regular",
           "sha256_file"]

BUNDLE_FORMAT = "slm-intents-edge-bundle"
#: Bumped only when a reader of the old version would misread a new bundle.
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = frozenset({1})
MANIFEST_NAME = "manifest.json"
#: The Ed25519 signature of ``manifest.json`` (see :mod:`edge_runtime.signing`); not listed in the manifest.
SIGNATURE_NAME = "manifest.sig"
#: The longest ``max_length`` a manifest may ask for (MiniLM takes 512); beyond it the tokenizer would overflow.
MAX_LENGTH_LIMIT = 1 << 16
#: A manifest (or signature) larger than this is refused before it is parsed (real manifests are a few kB).
MAX_MANIFEST_BYTES = 4 << 20
_MAX_SIGNATURE_BYTES = 1024
_CHUNK = 1 << 20
_SHA256_HEX = frozenset("0123456789abcdef")


def open_regular(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open ``path`` for reading only if it is a regular file itself: never through a symlink, never a device or
    FIFO (opened non-blocking, so a FIFO cannot hang the caller, then checked with ``fstat``)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if os.path.islink(path):
            raise IntegrityError(f"{path} is a symlink; a bundle holds regular files only") from None
        raise MissingFileError(f"cannot open {path}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise IntegrityError(f"{path} is not a regular file ({_kind(mode)})")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_bounded(path: Path, limit: int) -> bytes:
    with open_regular(path) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ManifestError(f"{path} is larger than {limit} bytes")
    return data


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symlink"), (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a regular file (never through a symlink), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open_regular(path) as fh:
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
        if not 2 <= data["max_length"] <= MAX_LENGTH_LIMIT:
            raise ManifestError(f"{source}: 'max_length' must be between 2 and {MAX_LENGTH_LIMIT}, got "
                                f"{_short(data['max_length'])}")
        for rel, entry in data["files"].items():
            _check_relative(rel, source)
            if rel in (MANIFEST_NAME, SIGNATURE_NAME):
                raise ManifestError(f"{source}: {rel!r} cannot be listed in 'files'")
            sha = entry.get("sha256") if isinstance(entry, dict) else None
            if not isinstance(sha, str) or len(sha) != 64 or not set(sha) <= _SHA256_HEX:
                raise ManifestError(f"{source}: files[{rel!r}] needs a 'sha256' of 64 lower-case hex digits")
            size = entry.get("bytes")
            if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
                raise ManifestError(f"{source}: files[{rel!r}]['bytes'] must be a non-negative integer")
        if data["tokenizer"] not in data["files"]:
            raise ManifestError(f"{source}: tokenizer {data['tokenizer']!r} is not listed in 'files'")
        for backend, entry in data["backends"].items():
            if not isinstance(entry, dict):
                raise ManifestError(f"{source}: backends[{backend!r}] must be an object")
            _check_backend_paths(backend, entry, data["files"], source)
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["labels"] = tuple(labels)
        for optional in ("metrics", "lineage", "reference"):
            if not isinstance(kwargs.get(optional, {}), dict):
                raise ManifestError(f"{source}: field {optional!r} must be an object")
        return cls(**kwargs, extra={k: v for k, v in data.items() if k not in known})


def _check_relative(rel: Any, source: str) -> None:
    """A bundle path is a normalised relative POSIX path: no leading '/', no '.', '..' or empty parts."""
    ok = isinstance(rel, str) and rel != "" and "\\" not in rel and "\0" not in rel
    if ok:
        p = PurePosixPath(rel)
        ok = not p.is_absolute() and p.as_posix() == rel and not {".", ".."} & set(rel.split("/"))
    if not ok:
        raise ManifestError(f"{source}: path {_short(rel)} must be relative and inside the bundle")


def _check_backend_paths(backend: str, entry: Mapping[str, Any], files: Mapping[str, Any], source: str) -> None:
    """A backend's ``file`` must be a listed file and its ``dir`` must hold listed files: a backend never loads
    anything the manifest (and so the signature) does not cover."""
    if "file" in entry:
        _check_relative(entry["file"], source)
        if entry["file"] not in files:
            raise ManifestError(f"{source}: backends[{backend!r}]['file'] {entry['file']!r} is not listed in 'files'")
    if "dir" in entry:
        _check_relative(entry["dir"], source)
        if entry["dir"] in files or not any(rel.startswith(entry["dir"] + "/") for rel in files):
            raise ManifestError(f"{source}: backends[{backend!r}]['dir'] {entry['dir']!r} is not a directory of "
                                "files listed in 'files'")


def _short(value: Any, limit: int = 80) -> str:
    if isinstance(value, int) and value.bit_length() >= 200:  # repr() of a huge int can raise, and says nothing
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _parse_manifest(data: bytes, source: str) -> "Manifest":
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{source}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ManifestError(f"{source}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer of more than sys.get_int_max_str_digits() digits
        raise ManifestError(f"{source}: not valid JSON ({str(exc)[:200]})") from None
    return Manifest.from_dict(obj, source=source)


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
        return cls.from_manifest_bytes(path, read_manifest(path), verify=verify)

    @classmethod
    def from_manifest_bytes(cls, path: str | os.PathLike[str], data: bytes, *, verify: bool = True) -> "Bundle":
        """The bundle at ``path`` described by ``data`` (the manifest's bytes, e.g. the ones a signature was checked
        on); with ``verify``, the directory is checked against it."""
        root = Path(path)
        bundle = cls(root, _parse_manifest(data, str(root / MANIFEST_NAME)))
        if verify:
            bundle.verify()
        return bundle

    def path_of(self, rel: str) -> Path:
        return self.root / rel

    def verify(self) -> None:
        """Check that the directory holds exactly the listed files (see the module docstring) with their sha256."""
        account_for_tree(self.root, self.manifest)
        for rel, entry in self.manifest.files.items():
            path = self.root / rel
            size = entry.get("bytes")
            if isinstance(size, int) and path.lstat().st_size != size:
                raise IntegrityError(
                    f"bundle {self.root}: {rel!r} has {path.lstat().st_size} bytes, manifest says {size} (truncated?)"
                )
            actual = sha256_file(path)
            if actual != entry["sha256"]:
                raise IntegrityError(
                    f"bundle {self.root}: sha256 of {rel!r} is {actual[:12]}..., manifest says {entry['sha256'][:12]}..."
                )

    def backend_entry(self, name: str) -> Mapping[str, Any] | None:
        return self.manifest.backends.get(name)


def read_manifest(path: str | os.PathLike[str]) -> bytes:
    """The bytes of ``manifest.json`` in the bundle directory ``path`` (a regular file, at most 4 MiB)."""
    root = Path(path)
    if not root.is_dir():
        raise BundleNotFoundError(f"bundle directory not found: {root}")
    if not os.path.lexists(root / MANIFEST_NAME):
        raise BundleNotFoundError(f"no {MANIFEST_NAME} in bundle directory {root}")
    return _read_bounded(root / MANIFEST_NAME, MAX_MANIFEST_BYTES)


def account_for_tree(root: str | os.PathLike[str], manifest: Manifest) -> None:
    """Raise :class:`IntegrityError` naming the first entry under ``root`` that the manifest does not account for,
    :class:`MissingFileError` for a listed file that is absent. Links are never followed (``root`` itself may be one,
    as a deployment's ``current`` link is)."""
    root = Path(root)
    listed = set(manifest.files)
    dirs = {p.as_posix() for rel in listed for p in PurePosixPath(rel).parents if p.as_posix() != "."}
    extras = {MANIFEST_NAME, SIGNATURE_NAME}
    seen: set[str] = set()
    pending = [("", root)]
    while pending:
        prefix, folder = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                rel = prefix + entry.name
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode) and rel in dirs:
                    pending.append((rel + "/", Path(entry.path)))
                elif stat.S_ISREG(mode) and (rel in listed or (not prefix and rel in extras)):
                    seen.add(rel)
                elif stat.S_ISREG(mode) or stat.S_ISDIR(mode):
                    raise IntegrityError(f"bundle {root}: {'directory' if stat.S_ISDIR(mode) else 'file'} {rel!r} is "
                                         "not listed in the manifest (a bundle holds only what it lists)")
                else:
                    raise IntegrityError(f"bundle {root}: {rel!r} is {_kind(mode)}; a bundle holds regular files only")
    missing = sorted(listed - seen)
    if missing:
        raise MissingFileError(f"bundle {root}: file {missing[0]!r} listed in the manifest is missing")


def stage_bundle(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Copy the bundle at ``source`` into the new directory ``dest``: its manifest, its signature (if any) and the
    files the manifest lists, nothing else; return ``dest``.

    The source is checked first (:func:`account_for_tree`), so a bundle with a stray file, symlink or device is
    refused before anything is copied, and each file is opened with :func:`open_regular`, so a file swapped for a
    link or a FIFO meanwhile is refused too, without blocking. ``dest`` is made with mode 0700. The copy is *not*
    verified here: verify it (signature, sha256) and load it, and nothing that can change the source matters.
    """
    src, out = Path(source), Path(dest)
    manifest_bytes = read_manifest(src)
    manifest = _parse_manifest(manifest_bytes, str(src / MANIFEST_NAME))
    account_for_tree(src, manifest)
    out.mkdir(mode=0o700)
    (out / MANIFEST_NAME).write_bytes(manifest_bytes)
    if os.path.lexists(src / SIGNATURE_NAME):
        (out / SIGNATURE_NAME).write_bytes(_read_bounded(src / SIGNATURE_NAME, _MAX_SIGNATURE_BYTES))
    for rel, entry in sorted(manifest.files.items()):
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        # A listed size bounds the copy: a file that grows while it is copied cannot fill the disk.
        limit = entry.get("bytes") if isinstance(entry.get("bytes"), int) else None
        with open_regular(src / rel) as fh, open(target, "xb") as dst:
            copied = 0
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                copied += len(chunk)
                if limit is not None and copied > limit:
                    raise IntegrityError(f"bundle {src}: {rel!r} is larger than the {limit} bytes the manifest lists")
                dst.write(chunk)
    return out


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
    import shutil  # the writers' modules load when a bundle is written, not on the device's import path
    import tempfile

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
    import shutil
    import zipfile

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
