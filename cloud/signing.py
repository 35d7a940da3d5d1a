"""The signer's side of bundle signatures: make an Ed25519 key pair, sign a bundle's manifest, check a signature.

The device side (and the format of ``manifest.sig``) is :mod:`edge_runtime.signing`. The private key stays
with the release pipeline (a KMS-held or offline key in production); devices get only the public key.

Command line (``pip install 'slm-intents[signing]'``); ``keygen`` writes into the store's ``keys/`` unless
told otherwise, never into the working directory::

    python -m cloud.signing keygen            # .store/slm-intents/keys/signing.key (0600) and signing.pub
    python -m cloud.signing sign --key .store/slm-intents/keys/signing.key .store/slm-intents/edge/1
    python -m cloud.signing verify --public-key .store/slm-intents/keys/signing.pub .store/slm-intents/edge/1

On Greengrass, ``python -m cloud.greengrass build --sign-key KEY`` signs while it builds the model component
(``manifest.sig`` inside ``model.zip``), and the app component's ``BundlePublicKey`` takes the one-line
base64 public key that ``keygen`` prints (:func:`public_key_b64`).
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from edge_runtime.bundle import MANIFEST_NAME, Bundle
from edge_runtime.errors import BundleError, SignatureError
from edge_runtime.signing import SIGNATURE_NAME, encode_signature, load_public_key, verify_bundle

__all__ = ["generate_keypair", "load_private_key", "public_key_b64", "sign_bundle", "main"]


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:  # pragma: no cover - depends on the install
        raise SignatureError("signing needs the 'cryptography' package: pip install 'slm-intents[signing]'") from None
    return ed25519, serialization


def generate_keypair(private_path: str | os.PathLike[str], public_path: str | os.PathLike[str]) -> None:
    """Write a new Ed25519 private key (PEM, PKCS#8, mode 0600) and its public key (PEM)."""
    ed25519, serialization = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    Path(private_path).parent.mkdir(parents=True, exist_ok=True)
    Path(public_path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    Path(public_path).write_bytes(public_pem)


def public_key_b64(private_key: Any) -> str:
    """The base64 of the 32 raw bytes of ``private_key``'s public key: one line, what ``BundlePublicKey`` takes
    (and what :func:`edge_runtime.signing.load_public_key` reads from a file)."""
    _, serialization = _crypto()
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_private_key(path: str | os.PathLike[str]) -> Any:
    """The Ed25519 private key in a PEM file; :class:`SignatureError` otherwise."""
    ed25519, serialization = _crypto()
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise SignatureError(f"cannot read the signing key {path}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"the signing key {path} is not a readable unencrypted PEM key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SignatureError(f"the signing key {path} is {type(key).__name__}, not Ed25519")
    return key


def sign_bundle(bundle_dir: str | os.PathLike[str], private_key: Any) -> Path:
    """Verify the bundle (every sha256), sign its ``manifest.json`` bytes, write ``manifest.sig``; return its path.

    ``private_key`` is a key from :func:`load_private_key` or the path of a PEM file.
    """
    if not hasattr(private_key, "sign"):
        private_key = load_private_key(private_key)
    bundle = Bundle.load(bundle_dir)  # never sign a bundle whose files do not match its manifest
    manifest = (bundle.root / MANIFEST_NAME).read_bytes()
    target = bundle.root / SIGNATURE_NAME
    tmp = target.with_name(SIGNATURE_NAME + ".tmp")
    tmp.write_bytes(encode_signature(private_key.sign(manifest)))
    os.replace(tmp, target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    from .clihelp import HelpFormatter
    from .store import DEFAULT_STORE, Store

    parser = argparse.ArgumentParser(prog="python -m cloud.signing", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("keygen", help="write a new Ed25519 key pair",
                       formatter_class=HelpFormatter)
    p.add_argument("--store", default=DEFAULT_STORE, help="store whose keys/ gets the pair")
    p.add_argument("--private", default=None,
                   help="private key file to create (PEM, mode 0600; must not exist) "
                        "(default: <store>/slm-intents/keys/signing.key)")
    p.add_argument("--public", default=None,
                   help="public key file to write (PEM), for the devices (default: <store>/slm-intents/keys/signing.pub)")
    p = sub.add_parser("sign", help="sign a bundle directory's manifest (writes manifest.sig)")
    p.add_argument("--key", required=True, help="Ed25519 private key (PEM)")
    p.add_argument("bundle", help="bundle directory")
    p = sub.add_parser("verify", help="check a bundle's signature and every file's sha256")
    p.add_argument("--public-key", required=True, help="Ed25519 public key (PEM or base64 raw)")
    p.add_argument("bundle", help="bundle directory")
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            keys = Store(Path(args.store)).keys()
            private = Path(args.private) if args.private else keys / "signing.key"
            public = Path(args.public) if args.public else keys / "signing.pub"
            generate_keypair(private, public)
            print(f"wrote {private} (keep secret) and {public} (for devices)")
            print(f"BundlePublicKey (Greengrass app configuration): {public_key_b64(load_private_key(private))}")
        elif args.command == "sign":
            print(f"signed: {sign_bundle(args.bundle, args.key)}")
        else:
            bundle = verify_bundle(args.bundle, load_public_key(args.public_key))
            print(f"ok: {bundle.manifest.name} v{bundle.manifest.version} is signed and intact")
    except FileExistsError as exc:
        print(f"error: {exc.filename} exists; refusing to overwrite a key", file=sys.stderr)
        return 1
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
