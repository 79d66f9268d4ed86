"""The federation's revocation list: an X.509 CRL signed by the federation CA, kept current by the operator.

``hpf pki revoke`` adds a certificate to the CA's own record (:mod:`federation.trust.ca_record`, kept next to its
key) and signs the next list from that record as ``<pki dir>/crl.pem``; nodes and the coordinator name that
file in their config (``revocations:``) and re-read it whenever it changes on disk. A list that is not signed
by the federation CA, or cannot be read, refuses every request until it is fixed (fail closed): a party
never silently forgets a revocation.

Every list carries a number (the CRLNumber extension, one more with each list the CA signs, taken from the
CA's record and never from ``crl.pem``, so re-signing cannot turn an older list put back into a new one). A
party remembers the number and digest of the list in force and refuses a list numbered below it, another list
under the same number, or a list carrying no number (``REVOCATION_ROLLBACK`` / ``REVOCATION_CONFLICT`` /
``REVOCATION_NUMBER_MISSING``): an older list put back over a newer one cannot un-revoke a certificate. While
running, the refused list is logged and the list in force stays. Where the party keeps a state file
(``revocation_state:``; a node's default is ``<state_dir>/revocation-state.json``; the coordinator keeps none
unless given one) the number and digest survive restarts too, and a restarted party refuses to start on an
older or a conflicting list.

The CA's side is here too: :func:`write_crl` signs the next list from the CA's record, and
:func:`newest_crl_in_place` says whether ``crl.pem`` is that list.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from hpf.federation.config_files import FileStamp, file_stamp, read_bytes
from hpf.federation.errors import AuthError, ConfigError
from hpf.federation.private_files import write_file
from hpf.federation.trust import ca_record
from hpf.federation.trust.certificates import MALFORMED_CERTIFICATE, load_certificate
from hpf.federation.trust.key_files import CaFiles, load_ca

log = logging.getLogger("hpf.revocation")

CRL_FILE = "crl.pem"
CRL_VALID_DAYS = 30


_NO_CRL_NUMBER: tuple[type[Exception], ...] = (x509.ExtensionNotFound, *MALFORMED_CERTIFICATE)
_NO_OWN_CRL: tuple[type[Exception], ...] = (OSError, *MALFORMED_CERTIFICATE)

_SHA256 = re.compile(r"[0-9a-f]{64}")


def crl_number(crl: x509.CertificateRevocationList) -> int | None:
    """The list's CRLNumber extension (RFC 5280 5.2.3), or None when it carries none (or a malformed one)."""
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except _NO_CRL_NUMBER:
        return None


def _own_crl(path: Path, ca_cert: x509.Certificate) -> x509.CertificateRevocationList | None:
    """The list at ``path`` when this CA signed it, every entry parsed (None when there is none, or it is
    unreadable or another's)."""
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
        ours = crl.issuer == ca_cert.subject and crl.is_signature_valid(ca_cert.public_key())  # type: ignore[arg-type]
        if ours:
            _ = (crl.extensions, [(e.serial_number, e.revocation_date_utc, e.extensions) for e in crl])
    except _NO_OWN_CRL:
        return None
    return crl if ours else None


def _ca_record(files: CaFiles, ca_cert: x509.Certificate) -> tuple[Path, ca_record.CaRecord]:
    """Where the CA's record of its lists is, and what it holds (see :mod:`federation.trust.ca_record`).

    A CA made before CAs kept a record gets one here, once, from its newest list as ``crl.pem`` holds it: that
    list's number (0 for a list from before lists were numbered) and its entries, or nothing revoked when there
    is no ``crl.pem``. From then on the CA trusts only the record. A ``crl.pem`` that cannot be read or that
    this CA did not sign is no starting point (``PKI_CRL_INVALID``): the CA could not tell what it revoked.
    """
    path = files.cert.parent / ca_record.RECORD_FILE
    record = ca_record.load(path, ca_cert)
    if record is None:
        crl_path = files.cert.parent / CRL_FILE
        crl = _own_crl(crl_path, ca_cert)
        if crl is None and crl_path.exists():
            raise ConfigError(
                f"{crl_path}: not a revocation list this CA signed, and the CA keeps no record of what it revoked "
                "to sign the next list from",
                code="PKI_CRL_INVALID",
                hint="put back the newest crl.pem this CA signed; the CA starts its record from it",
            )
        record = ca_record.from_list(ca_cert, crl, crl_number(crl) if crl is not None else None)
        ca_record.save(path, record)
    return path, record


def newest_crl_in_place(ca_dir_or_files: Path | str | CaFiles) -> bool:
    """True when ``crl.pem`` is the newest list the CA signed: its own, numbered as its record's highest number
    and listing every certificate the record holds as revoked."""
    files = ca_dir_or_files if isinstance(ca_dir_or_files, CaFiles) else CaFiles.in_dir(ca_dir_or_files)
    ca_cert, _ = load_ca(files)
    _, record = _ca_record(files, ca_cert)
    crl = _own_crl(files.cert.parent / CRL_FILE, ca_cert)
    return (
        crl is not None
        and crl_number(crl) == record.number
        and {entry.serial_number for entry in crl} == record.serials
    )


def write_crl(ca_dir_or_files: Path | str | CaFiles, revoked: Sequence[ca_record.Revoked] = ()) -> Path:
    """Sign the CA's next revocation list from its own record, with ``revoked`` added, and write it as
    ``crl.pem`` next to ``ca.pem``.

    The list carries the record's next number (CRLNumber; 1 for the first) and every certificate the record
    holds as revoked. The record is written first (atomically, mode 0600, next to ``ca.key``), so the CA never
    signs two lists under one number. ``crl.pem`` is never the basis of the next list: it is read only to bring
    a record put back from an older copy up to a newer list this CA signed (number and revoked certificates,
    never down), so neither an older list copied over it nor an older record un-revokes a certificate; a party
    that has accepted list ``n`` refuses any list numbered below ``n``
    (:class:`federation.trust.revocation.RevocationList`).
    """
    files = ca_dir_or_files if isinstance(ca_dir_or_files, CaFiles) else CaFiles.in_dir(ca_dir_or_files)
    ca_cert, ca_key = load_ca(files)
    record_path, record = _ca_record(files, ca_cert)
    published = _own_crl(files.cert.parent / CRL_FILE, ca_cert)
    if published is not None and (crl_number(published) or 0) > record.number:
        # the record was put back from an older copy: it is brought up to the newer list this CA signed (never
        # down), so the next list neither reuses a number parties hold nor drops what the CA revoked since
        record = dataclasses.replace(
            record.revoking(ca_record.Revoked.of(entry) for entry in published), number=crl_number(published) or 0
        )
    record = record.revoking(revoked).signed()
    ca_record.save(record_path, record)
    now = dt.datetime.now(dt.UTC)
    builder = x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject).last_update(now)
    builder = builder.next_update(now + dt.timedelta(days=CRL_VALID_DAYS))
    builder = builder.add_extension(x509.CRLNumber(record.number), critical=False)
    for entry in record.revoked:
        builder = builder.add_revoked_certificate(entry.entry())
    path = files.cert.parent / CRL_FILE
    write_file(path, builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), 0o644)
    return path


def revoke(ca_dir: Path | str, cert_pem: bytes, *, reason: x509.ReasonFlags = x509.ReasonFlags.unspecified) -> Path:
    """Add the certificate to the CA's record and sign the next list from it (``<ca_dir>/crl.pem``); returns its
    path. The list holds everything the CA ever revoked, whatever ``crl.pem`` held before."""
    ca_cert, _ = load_ca(ca_dir)
    try:
        cert = load_certificate(cert_pem)
    except ValueError:
        raise ConfigError("not a PEM certificate", code="PKI_BAD_CERTIFICATE") from None
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        hint = "revoke it with the CA that issued it"
        raise ConfigError("the certificate was not issued by this CA", code="PKI_WRONG_CA", hint=hint) from None
    why = None if reason == x509.ReasonFlags.unspecified else reason
    return write_crl(ca_dir, [ca_record.Revoked(cert.serial_number, dt.datetime.now(dt.UTC), why)])


def _load_crl(path: Path, ca_cert: x509.Certificate) -> x509.CertificateRevocationList:
    try:  # read as a config file is: never waiting on a FIFO, never more than a config file holds
        data = read_bytes(path)
    except ConfigError as err:
        raise ConfigError(err.message, code="CRL_UNREADABLE", hint=err.hint) from None
    try:
        crl = x509.load_pem_x509_crl(data)
        signed = crl.issuer == ca_cert.subject and crl.is_signature_valid(ca_cert.public_key())  # type: ignore[arg-type]
        if signed:  # every field read later, parsed now (an invalid version or entry is not a ValueError)
            _ = (crl.extensions, [(entry.serial_number, entry.extensions) for entry in crl], crl.next_update_utc)
    except MALFORMED_CERTIFICATE:
        raise AuthError(f"{path}: not a PEM revocation list", code="AUTH_CRL_INVALID") from None
    if not signed:
        raise AuthError(
            f"{path}: the revocation list is not signed by the federation CA",
            code="AUTH_CRL_INVALID",
            hint="make it with `hpf pki revoke` using the federation's CA",
        )
    return crl


def refresh(ca_dir: Path | str) -> Path:
    """Sign the CA's next list from its own record (same revocations, a new next-update time and number).

    ``crl.pem`` is not read: an older list copied over it is replaced by the next one, not re-signed.
    """
    return write_crl(ca_dir)


_CURRENT_HINT = (
    "put back the newest list the CA signed, or run `hpf pki crl --ca-dir DIR`, which signs the next list from "
    "the CA's own record of everything it revoked"
)


def _refusal(
    path: Path, number: int | None, digest: str, accepted: int, accepted_digest: str | None
) -> AuthError | None:
    """Why a CA-signed list numbered ``number`` (SHA-256 of its DER ``digest``) may not replace list ``accepted``
    (``accepted_digest``, None when not known), or None when it may."""
    if number is None:
        return AuthError(
            f"{path}: the revocation list carries no number (CRLNumber), so it cannot be told from an older one",
            code="REVOCATION_NUMBER_MISSING",
            hint="re-sign it with `hpf pki crl --ca-dir DIR` (lists signed since carry a number)",
        )
    if number < accepted:
        return AuthError(
            f"{path}: revocation list number {number} is older than list {accepted}, which this party has accepted",
            code="REVOCATION_ROLLBACK",
            hint=_CURRENT_HINT,
        )
    if number == accepted and accepted_digest is not None and digest != accepted_digest:
        return AuthError(
            f"{path}: this is not the revocation list number {number} this party has accepted, but another list "
            "under the same number",
            code="REVOCATION_CONFLICT",
            hint=_CURRENT_HINT,
        )
    return None


def _digest(crl: x509.CertificateRevocationList) -> str:
    return hashlib.sha256(crl.public_bytes(serialization.Encoding.DER)).hexdigest()


_KEPT_IN_FORCE = ("REVOCATION_ROLLBACK", "REVOCATION_CONFLICT", "REVOCATION_NUMBER_MISSING", "REVOCATION_SHRUNK")
_STATE_HINT = "restore it; deleting it makes this party accept any list the CA signed"


class RevocationList:
    """The revoked serials of a CRL file, re-read when the file changes; no file means nothing is revoked.

    A list replaces the one in force only with a higher number, or as the very same list (a copy of it): a lower
    number is a rollback, and a different list under the same number a conflict (the CA signs each number once),
    and either leaves the list in force. ``state`` is a file where the number and digest of the list in force
    are kept across restarts (None: in memory only).
    """

    def __init__(self, path: Path | None, ca_cert: x509.Certificate, state: Path | None = None) -> None:
        self._path = path
        self._ca = ca_cert
        self._state = state
        self._ca_id = ca_record.ca_id(ca_cert)
        self._lock = threading.Lock()
        self._stamp: FileStamp | None = None
        self._serials: frozenset[int] = frozenset()
        self._number, self._digest = self._remembered()
        self._error: AuthError | None = None
        if path is not None:  # a bad, older, conflicting or number-less file at startup stops the party
            self._accept(_load_crl(path, ca_cert))
            self._stamp = self._stat()

    @property
    def number(self) -> int:
        """The number of the list in force (0 before any)."""
        return self._number

    def _remembered(self) -> tuple[int, str | None]:
        """The number and digest of the list this party last accepted under this CA, from its state file (0 and
        None without one; a state written before digests were kept has no digest)."""
        if self._state is None:
            return 0, None
        try:
            doc = json.loads(self._state.read_bytes())
        except FileNotFoundError:
            return 0, None
        except (OSError, ValueError, RecursionError) as exc:
            raise ConfigError(
                f"{self._state}: the revocation state cannot be read ({type(exc).__name__})",
                code="REVOCATION_STATE_INVALID",
                hint=_STATE_HINT,
            ) from None
        number = doc.get("crl_number") if isinstance(doc, dict) else None
        digest = doc.get("crl_sha256") if isinstance(doc, dict) else None
        if (
            type(number) is not int
            or number < 0
            or not isinstance(doc.get("ca"), str)
            or not (digest is None or (isinstance(digest, str) and _SHA256.fullmatch(digest)))
        ):
            raise ConfigError(
                f"{self._state}: the revocation state is malformed", code="REVOCATION_STATE_INVALID", hint=_STATE_HINT
            )
        if doc["ca"] != self._ca_id:  # a new federation CA starts its lists afresh
            return 0, None
        return number, digest

    def _remember(self) -> None:
        if self._state is None:
            return
        doc = {"ca": self._ca_id, "crl_number": self._number, "crl_sha256": self._digest}
        try:
            write_file(self._state, json.dumps(doc, sort_keys=True).encode() + b"\n", 0o600)
        except OSError as exc:  # the number still holds in memory
            log.error("cannot keep the revocation list number in %s (%s)", self._state, exc.strerror)

    def _accept(self, crl: x509.CertificateRevocationList) -> None:
        """Put a CA-signed list in force, unless it is older than, or another list under the number of, the one
        in force (or carries no number)."""
        assert self._path is not None
        number, digest = crl_number(crl), _digest(crl)
        if (refused := _refusal(self._path, number, digest, self._number, self._digest)) is not None:
            raise refused
        assert number is not None
        serials = frozenset(entry.serial_number for entry in crl)
        if not self._serials <= serials:  # revoking is for good: no later list of the CA drops a certificate
            raise AuthError(
                f"{self._path}: revocation list {number} leaves out certificates list {self._number} revoked",
                code="REVOCATION_SHRUNK",
                hint="the CA's record was put back from an older copy: restore its newest record, revoke those "
                "certificates again, and re-sign with `hpf pki crl --ca-dir DIR`",
            )
        due = crl.next_update_utc
        if due is not None and dt.datetime.now(dt.UTC) > due:
            log.warning("the revocation list is past its next update (%s): re-sign it with `hpf pki crl`", due.date())
        self._serials = serials
        if (number, digest) != (self._number, self._digest):
            self._number, self._digest = number, digest
            self._remember()

    def _stat(self) -> FileStamp | None:
        assert self._path is not None
        return file_stamp(self._path)

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
                self._accept(_load_crl(self._path, self._ca))
                self._error = None
                log.info("revocation list %d loaded: %d revoked certificate(s)", self._number, len(self._serials))
            except AuthError as err:
                if err.code in _KEPT_IN_FORCE:
                    # signed by the CA, but not newer: the list in force stays (and so does a failure already in force)
                    log.error("revocation list refused: %s; list %d stays in force", err.code, self._number)
                else:
                    self._fail(err)
            except ConfigError as err:
                self._fail(err)
            self._stamp = stamp

    def _fail(self, err: AuthError | ConfigError) -> None:
        self._error = AuthError(
            "this party's revocation list cannot be read; it refuses every request until it is fixed",
            code="AUTH_CRL_INVALID",
        )
        log.error("revocation list unusable: %s", err.code)

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
