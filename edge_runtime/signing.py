"""Bundle signatures: an Ed25519 signature over ``manifest.json``, checked on the device before anything loads.

The manifest carries every file's sha256, and a bundle may hold nothing it does not list, so signing the
manifest's exact bytes covers the whole bundle: :func:`verify_bundle` checks the signature on the manifest's bytes,
then checks the directory against the manifest parsed from those same bytes (every file's sha256, nothing
unlisted). Verify a private copy (:func:`edge_runtime.bundle.stage_bundle`) and load that copy, or the bytes loaded
may not be the bytes checked. The signature lives next to the manifest as ``manifest.sig`` (base64 of the 64 raw
signature bytes); it is not listed in the manifest, so signing never changes what is signed.

The ``cryptography`` package is imported only here and only when a key is used (``pip install
'slm-intents[signing]'``); a device with no key configured never imports it.

Example::

    key = load_public_key("/greengrass/v2/keys/bundles.pub")   # PEM or raw base64 Ed25519 public key
    bundle = verify_bundle("edge/3", key)                        # SignatureError when unsigned or wrong
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Any

from .bundle import SIGNATURE_NAME, Bundle, open_regular, read_manifest
from .errors import BundleError, ManifestError, SignatureError

__all__ = ["SIGNATURE_NAME", "load_public_key", "verify_manifest_bytes", "verify_bundle", "encode_signature",
           "decode_signature"]

_MAX_SIGNATURE_BYTES = 1024


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:  # pragma: no cover - depends on the install
        raise SignatureError("bundle signatures need the 'cryptography' package: "
                             "pip install 'slm-intents[signing]'") from None
    return ed25519


def load_public_key(source: str | os.PathLike[str] | bytes) -> Any:
    """An Ed25519 public key from a PEM file, PEM bytes, or the base64 of its 32 raw bytes.

    Raises :class:`SignatureError` when the key cannot be read or is not Ed25519.
    """
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization

    if isinstance(source, (str, os.PathLike)):
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise SignatureError(f"cannot read the bundle public key {source}: {exc.strerror}") from None
    else:
        data = bytes(source)
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_public_key(data)
        else:
            key = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(), validate=True))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise SignatureError(f"the bundle public key is not a readable Ed25519 key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SignatureError(f"the bundle public key is {type(key).__name__}, not Ed25519")
    return key


def encode_signature(signature: bytes) -> bytes:
    """What ``manifest.sig`` holds: base64 of the raw signature, one line."""
    return base64.b64encode(signature) + b"\n"


def decode_signature(data: bytes) -> bytes:
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{SIGNATURE_NAME} is not base64") from None
    if len(raw) != 64:
        raise SignatureError(f"{SIGNATURE_NAME} holds {len(raw)} bytes; an Ed25519 signature has 64")
    return raw


def verify_manifest_bytes(manifest: bytes, signature: bytes, public_key: Any) -> None:
    """Raise :class:`SignatureError` unless ``signature`` (raw 64 bytes) signs ``manifest`` under ``public_key``."""
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(signature, manifest)
    except InvalidSignature:
        raise SignatureError("the bundle manifest's signature does not verify against the configured public key "
                             "(tampered manifest, or signed with another key)") from None


def verify_bundle(path: str | os.PathLike[str], public_key: Any) -> Bundle:
    """Check ``manifest.sig`` against ``public_key``, then load and sha256-verify the bundle.

    ``public_key`` is a key from :func:`load_public_key` or anything it accepts. Unsigned bundles are refused.
    Raises :class:`SignatureError` or another :class:`~edge_runtime.errors.BundleError`.
    """
    if not hasattr(public_key, "verify"):
        public_key = load_public_key(public_key)
    root = Path(path)
    try:
        manifest = read_manifest(root)
    except ManifestError as exc:
        raise SignatureError(f"bundle {root}: {exc}") from None
    sig_path = root / SIGNATURE_NAME
    if not os.path.lexists(sig_path):
        raise SignatureError(f"bundle {root} is not signed (no {SIGNATURE_NAME}) and a public key is configured")
    try:
        with open_regular(sig_path) as fh:
            signature = fh.read(_MAX_SIGNATURE_BYTES + 1)
    except BundleError as exc:
        raise SignatureError(f"bundle {root}: {exc}") from None
    if len(signature) > _MAX_SIGNATURE_BYTES:
        raise SignatureError(f"bundle {root}: {SIGNATURE_NAME} is implausibly large")
    verify_manifest_bytes(manifest, decode_signature(signature), public_key)
    # Parsed from the bytes whose signature was checked: a manifest swapped on disk meanwhile changes nothing.
    return Bundle.from_manifest_bytes(root, manifest)
