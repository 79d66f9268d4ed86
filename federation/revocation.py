"""The federation's revocation list: an X.509 CRL signed by the federation CA, kept current by the operator.

``hpf pki revoke`` adds a certificate's serial to ``<pki dir>/crl.pem``; nodes and the coordinator name that
file in their config (``revocations:``) and re-read it whenever it changes on disk. A list that is not signed
by the federation CA, or cannot be read, refuses every request until it is fixed (fail closed): a party
never silently forgets a revocation.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from federation import pki
from federation.errors import AuthError, ConfigError

log = logging.getLogger("hpf.revocation")

CRL_FILE = pki.CRL_FILE


def revoke(ca_dir: Path | str, cert_pem: bytes, *, reason: x509.ReasonFlags = x509.ReasonFlags.unspecified) -> Path:
    """Add the certificate to the CA's revocation list (``<ca_dir>/crl.pem``), re-signed; returns its path."""
    ca_cert, _ = pki.load_ca(ca_dir)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise ConfigError("not a PEM certificate", code="PKI_BAD_CERTIFICATE") from None
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        hint = "revoke it with the CA that issued it"
        raise ConfigError("the certificate was not issued by this CA", code="PKI_WRONG_CA", hint=hint) from None
    path = Path(ca_dir) / CRL_FILE
    entries: dict[int, x509.RevokedCertificate] = {}
    if path.exists():
        for entry in _load_crl(path, ca_cert):
            entries[entry.serial_number] = entry
    if cert.serial_number not in entries:
        builder = x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
        builder = builder.revocation_date(dt.datetime.now(dt.UTC))
        if reason != x509.ReasonFlags.unspecified:
            builder = builder.add_extension(x509.CRLReason(reason), critical=False)
        entries[cert.serial_number] = builder.build()
    return pki.write_crl(ca_dir, list(entries.values()))


def _load_crl(path: Path, ca_cert: x509.Certificate) -> x509.CertificateRevocationList:
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the revocation list ({exc.strerror})", code="CRL_UNREADABLE") from None
    except ValueError:
        raise AuthError(f"{path}: not a PEM revocation list", code="AUTH_CRL_INVALID") from None
    if crl.issuer != ca_cert.subject or not crl.is_signature_valid(ca_cert.public_key()):  # type: ignore[arg-type]
        raise AuthError(
            f"{path}: the revocation list is not signed by the federation CA",
            code="AUTH_CRL_INVALID",
            hint="make it with `hpf pki revoke` using the federation's CA",
        )
    return crl


def revoked_serials(path: Path, ca_cert: x509.Certificate) -> frozenset[int]:
    """Serials listed in a CA-signed CRL file (a list past its next update is still used, with a warning)."""
    crl = _load_crl(path, ca_cert)
    due = crl.next_update_utc
    if due is not None and dt.datetime.now(dt.UTC) > due:
        log.warning("the revocation list is past its next update (%s): re-sign it with `hpf pki crl`", due.date())
    return frozenset(entry.serial_number for entry in crl)


def refresh(ca_dir: Path | str) -> Path:
    """Re-sign the CA's revocation list with the same entries and a new next-update time."""
    ca_cert, _ = pki.load_ca(ca_dir)
    path = Path(ca_dir) / CRL_FILE
    entries = list(_load_crl(path, ca_cert)) if path.exists() else []
    return pki.write_crl(ca_dir, entries)


class RevocationList:
    """The revoked serials of a CRL file, re-read when the file changes; no file means nothing is revoked."""

    def __init__(self, path: Path | None, ca_cert: x509.Certificate) -> None:
        self._path = path
        self._ca = ca_cert
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._serials: frozenset[int] = frozenset()
        self._error: AuthError | None = None
        if path is not None:
            self._serials = revoked_serials(path, ca_cert)  # a bad file at startup stops the party
            self._stamp = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        assert self._path is not None
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _refresh(self) -> None:
        if self._path is None:
            return
        stamp = self._stat()
        if stamp == self._stamp:
            return
        with self._lock:
            if stamp == self._stamp:
                return
            try:
                if stamp is None:
                    raise AuthError(f"{self._path}: the revocation list is gone", code="AUTH_CRL_INVALID")
                self._serials = revoked_serials(self._path, self._ca)
                self._error = None
                log.info("revocation list reloaded: %d revoked certificate(s)", len(self._serials))
            except (AuthError, ConfigError) as err:
                self._error = AuthError(
                    "this party's revocation list cannot be read; it refuses every request until it is fixed",
                    code="AUTH_CRL_INVALID",
                )
                log.error("revocation list unusable: %s", err.code)
            self._stamp = stamp

    def check(self, serial: int, who: str) -> None:
        """AuthError ``AUTH_CERT_REVOKED`` if ``serial`` is revoked (or the list is unusable)."""
        self._refresh()
        if self._error is not None:
            raise self._error
        if serial in self._serials:
            raise AuthError(
                f"the {who} certificate has been revoked",
                code="AUTH_CERT_REVOKED",
                hint="ask the federation operator for a new certificate",
            )
