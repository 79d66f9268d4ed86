"""A node's audit signing key: made on the log's first open, kept beside the log, and its public half.

In the log's directory, ``audit.key`` is the node's Ed25519 signing key (PKCS#8 PEM, mode 0600) and
``audit.pub`` its public half (SubjectPublicKeyInfo PEM). An auditor pins the public key they got from the
node's operator or the catalog, never the copy beside the log.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hpf.federation.errors import AuditError
from hpf.federation.private_files import create_file, read_regular, write_file

KEY = "audit.key"
PUBLIC_KEY = "audit.pub"
MAX_KEY_FILE_BYTES = 64 * 1024  # a PEM key is a few hundred bytes: a file past this is not one


def load_public_key(text: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from SubjectPublicKeyInfo PEM or the raw 32 bytes in base64."""
    data = text.encode() if isinstance(text, str) else text
    code = "AUDIT_KEY_INVALID"
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_public_key(data)
            if not isinstance(key, Ed25519PublicKey):
                raise AuditError("the public key is not an Ed25519 key", code=code)
            return key
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(), validate=True))
    except (ValueError, TypeError, UnsupportedAlgorithm, binascii.Error):
        raise AuditError("not an Ed25519 public key (PEM, or 32 bytes in base64)", code=code) from None


def public_key_raw(key: Ed25519PublicKey) -> bytes:
    """The raw 32 bytes of an Ed25519 public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_or_create_signing_key(directory: Path, log_has_entries: bool) -> Ed25519PrivateKey:
    """The signing key in ``directory``, made (with its public half) when there is none and the log is empty.

    Refuses a missing key for a log with entries (``AUDIT_KEY_MISSING``), a key file that is no regular file or
    cannot be read (``AUDIT_KEY_UNREADABLE``: a FIFO is never waited on), one that is not an unencrypted PEM
    Ed25519 key (``AUDIT_KEY_INVALID``), and a public half that is not this key's (``AUDIT_KEY_MISMATCH``).
    """
    key_path, pub_path = directory / KEY, directory / PUBLIC_KEY
    if not key_path.exists():
        if log_has_entries:
            raise AuditError(
                f"{key_path}: the audit key is missing but the log has entries",
                code="AUDIT_KEY_MISSING",
                hint="restore the key; a new key cannot sign for entries the old one signed",
            )
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        if not create_file(key_path, pem, 0o600):  # another maker wrote one first: that one is the node's
            key = _load_signing_key(key_path)
    else:
        key = _load_signing_key(key_path)
    public = _public_half(pub_path)
    if public is None:
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        write_file(pub_path, key.public_key().public_bytes(serialization.Encoding.PEM, spki), 0o644)
    else:
        _check_public_half(pub_path, public, key_path, key)
    return key


def read_signing_public_key(directory: Path) -> bytes:
    """The raw public half of the signing key in ``directory``, read and never made nor written (a check of a
    node's state changes none of it): derived from the key, and refused as :func:`load_or_create_signing_key`
    refuses it (``AUDIT_KEY_MISSING`` without a key, ``AUDIT_KEY_UNREADABLE``, ``AUDIT_KEY_INVALID``,
    ``AUDIT_KEY_MISMATCH`` for a public half beside it that is not its own; a missing one is no refusal)."""
    key_path, pub_path = directory / KEY, directory / PUBLIC_KEY
    key = _load_signing_key(key_path)
    public = _public_half(pub_path)
    if public is not None:
        _check_public_half(pub_path, public, key_path, key)
    return public_key_raw(key.public_key())


def _read_key_file(path: Path, what: str) -> bytes | None:
    """The bytes of a key file, None when there is none; one that is no regular file (a FIFO is never waited
    on), is past :data:`MAX_KEY_FILE_BYTES` or cannot be read is ``AUDIT_KEY_UNREADABLE``."""
    try:
        return read_regular(path, MAX_KEY_FILE_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditError(
            f"{path}: cannot read the {what} ({exc.strerror})",
            code="AUDIT_KEY_UNREADABLE",
            hint="it must be the regular file made on the log's first open, readable by the node's user",
        ) from None


def _public_half(path: Path) -> bytes | None:
    return _read_key_file(path, "audit public key")


def _check_public_half(pub_path: Path, public: bytes, key_path: Path, key: Ed25519PrivateKey) -> None:
    try:
        same = public_key_raw(load_public_key(public)) == public_key_raw(key.public_key())
    except AuditError:
        same = False
    if not same:
        raise AuditError(f"{pub_path} does not match {key_path}", code="AUDIT_KEY_MISMATCH")


def _load_signing_key(path: Path) -> Ed25519PrivateKey:
    data = _read_key_file(path, "audit key")
    if data is None:
        raise AuditError(
            f"{path}: the audit key is missing",
            code="AUDIT_KEY_MISSING",
            hint="restore the key, or start the node once (`hpf node keys`) to make one for a log with no entries",
        )
    try:
        loaded = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        loaded = None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise AuditError(f"{path}: not an unencrypted PEM Ed25519 key", code="AUDIT_KEY_INVALID")
    return loaded
