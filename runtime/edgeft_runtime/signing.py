"""Ed25519 signatures over a bundle's ``bundle.json`` (which holds the sha256 of every other file), offline.

``bundle.sig`` is JSON: the algorithm, the sha256 of the signer's public key (raw 32 bytes) and the
base64 signature of bundle.json's exact bytes. Keys are PEM files, e.g. made with OpenSSL:

    openssl genpkey -algorithm ed25519 -out signing-key.pem
    openssl pkey -in signing-key.pem -pubout -out signing-key.pub.pem

Uses the ``cryptography`` package (``pip install 'edgeft-runtime[sign]'``), imported only when signing or
checking a signature.
"""
from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from edgeft_runtime.errors import BundleError, EdgeftError

SIGNATURE_FILE = "bundle.sig"
ALGORITHM = "ed25519"
KEYGEN = "openssl genpkey -algorithm ed25519 -out signing-key.pem"


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise EdgeftError("signing and signature checks need the `cryptography` package, which is not installed",
                          fix="pip install 'edgeft-runtime[sign]' (or pip install cryptography)") from None
    return serialization, ed25519, InvalidSignature


def _unsupported():
    from cryptography.exceptions import UnsupportedAlgorithm

    return UnsupportedAlgorithm


def _raw_public(public_key) -> bytes:
    serialization, _, _ = _crypto()
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_private_key(path: Path):
    serialization, ed25519, _ = _crypto()
    path = Path(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise EdgeftError(f"--sign-key {path}: no such file", fix=f"make a key with `{KEYGEN}`") from None
    except OSError as e:
        raise EdgeftError(f"--sign-key {path} cannot be read ({e.strerror})", fix="pass a readable PEM file") from None
    except (ValueError, TypeError, _unsupported()) as e:
        raise EdgeftError(f"--sign-key {path} is not an unencrypted PEM private key ({e})",
                          fix=f"make an Ed25519 key with `{KEYGEN}`") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise EdgeftError(f"--sign-key {path} is a {type(key).__name__.lstrip('_')}, not an Ed25519 key",
                          fix=f"make an Ed25519 key with `{KEYGEN}`")
    return key


def load_public_key(path: Path):
    serialization, ed25519, _ = _crypto()
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise EdgeftError(f"--public-key {path}: {e.strerror or 'cannot be read'}",
                          fix="pass the public half of the key the bundle was signed with "
                              "(`openssl pkey -in signing-key.pem -pubout`)") from None
    if b"PRIVATE KEY" in data:                # a signing key has no business on a device
        raise EdgeftError(f"--public-key {path} is a private key: the signing key should stay where bundles are made",
                          fix="pass its public half: `openssl pkey -in signing-key.pem -pubout -out signing-key.pub.pem`")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, _unsupported()):
        raise EdgeftError(f"--public-key {path} is not a PEM public key",
                          fix="pass the file `openssl pkey -in signing-key.pem -pubout` writes") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise EdgeftError(f"--public-key {path} is not an Ed25519 key", fix=f"bundles are signed with Ed25519 ({KEYGEN})")
    return key


def sign(bundle_json: bytes, private_key) -> dict:
    return {"algorithm": ALGORITHM, "signed_file": "bundle.json",
            "public_key_sha256": hashlib.sha256(_raw_public(private_key.public_key())).hexdigest(),
            "signature": base64.b64encode(private_key.sign(bundle_json)).decode()}


def verify(root: Path, public_key) -> str:
    """Check ``root/bundle.sig`` against ``root/bundle.json`` with ``public_key``; BundleError when it is
    missing or does not verify. Returns the signer's key fingerprint."""
    _, _, invalid = _crypto()
    sig_path = Path(root) / SIGNATURE_FILE
    if not sig_path.is_file():
        raise BundleError(f"{root} is not signed (no {SIGNATURE_FILE}) but a signature was required (--public-key)",
                          fix="ask for a bundle made with `edgeft package --sign-key`, or drop --public-key")
    try:
        sig = json.loads(sig_path.read_text(encoding="utf-8"))
        signature = base64.b64decode(sig["signature"], validate=True)
    except (ValueError, KeyError, TypeError):
        raise BundleError(f"{sig_path} is damaged (not the JSON edgeft writes)",
                          fix="get the bundle again from its source") from None
    if sig.get("algorithm") != ALGORITHM:
        raise BundleError(f"{sig_path} uses {sig.get('algorithm')!r}; this runtime checks {ALGORITHM} signatures")
    fingerprint = hashlib.sha256(_raw_public(public_key)).hexdigest()
    try:
        public_key.verify(signature, (Path(root) / "bundle.json").read_bytes())
    except invalid:
        other = "" if sig.get("public_key_sha256") == fingerprint else \
            f" (it was signed by key {str(sig.get('public_key_sha256'))[:16]}…, you passed {fingerprint[:16]}…)"
        raise BundleError(f"the signature of {root} does not verify{other}: bundle.json was changed after signing, "
                          "or it was signed with another key", fix="do not install this bundle; get it again from its source") from None
    return fingerprint
