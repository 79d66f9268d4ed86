"""Where a party's certificate and key live, writing a pair (key mode 0600), and reading the CA's pair back.

All keys are ECDSA P-256, written unencrypted as PKCS#8 PEM with file mode 0600 (gRPC reads them as is).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hpf.federation.errors import AuthError, ConfigError
from hpf.federation.private_files import write_file
from hpf.federation.trust.certificates import key_matches, load_certificate


@dataclass(frozen=True)
class CaFiles:
    """Where a CA's certificate and key live."""

    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, directory: Path | str) -> CaFiles:
        return cls(cert=Path(directory) / "ca.pem", key=Path(directory) / "ca.key")


@dataclass(frozen=True)
class CertFiles:
    """A leaf certificate, its key, and the CA certificate that verifies it."""

    cert: Path
    key: Path
    ca: Path


def write_pair(files: CaFiles | CertFiles, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    """Write ``key`` (mode 0600) and ``cert`` where ``files`` says."""
    pem, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    write_file(files.key, key.private_bytes(pem, pkcs8, serialization.NoEncryption()), 0o600)
    write_file(files.cert, cert.public_bytes(pem), 0o644)


def load_ca(ca_dir_or_files: Path | str | CaFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Read a CA's certificate and key, with errors that say how to make one."""
    files = ca_dir_or_files if isinstance(ca_dir_or_files, CaFiles) else CaFiles.in_dir(ca_dir_or_files)
    for path in (files.cert, files.key):
        if not path.is_file():
            hint = f"run `hpf pki init --dir {files.cert.parent} --federation NAME` to create the federation CA"
            raise ConfigError(f"{path}: CA file not found", code="PKI_CA_NOT_FOUND", hint=hint)
    try:
        cert = load_certificate(files.cert.read_bytes())
    except ValueError:
        raise AuthError(f"{files.cert}: not a PEM certificate", code="TLS_PEM_INVALID") from None
    try:
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise AuthError(f"{files.key}: not an unencrypted PEM ECDSA key", code="TLS_PEM_INVALID")
    if not key_matches(cert, key):
        raise AuthError(f"{files.key}: key does not match {files.cert}", code="TLS_KEY_MISMATCH")
    return cert, key
