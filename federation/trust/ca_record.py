"""The CA's own record of its revocation lists: the highest number it has signed and every certificate it revoked.

The record lives next to the CA's key (``<ca dir>/ca-revocations.json``, mode 0600, written atomically) and is
the only basis of the CA's next list: :func:`federation.trust.revocation.write_crl` adds to it, writes it, and
then signs the list from it. ``crl.pem`` is what the CA publishes, never what it reads back, so an older list
copied over ``crl.pem`` (which parties refuse) is not re-signed as a new one by the routine re-signing or the
next revocation: the next list carries the next number and everything the CA ever revoked.

A record names its CA (the SHA-256 of the CA certificate), so a record left beside a different CA is refused
rather than trusted. Revoking is for good: the record only grows.

>>> import datetime as dt
>>> record = CaRecord(ca="ab" * 32, number=0, revoked=())
>>> at = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
>>> record = record.revoking([Revoked(0x1F, at, None)]).revoking([Revoked(0x1F, at, None), Revoked(7, at, None)])
>>> [f"{r.serial:x}" for r in record.revoked], record.signed().number
(['1f', '7'], 1)
>>> parse(record.to_json(), "ab" * 32) == record
True
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hpf.federation.errors import ConfigError
from hpf.federation.private_files import PRIVATE, write_file

RECORD_FILE = "ca-revocations.json"
_HEX = re.compile(r"[0-9a-f]{1,64}")
_RESTORE = (
    "restore it from the CA folder's backup: it is the CA's memory of what it revoked (moving it aside makes the CA "
    "start a new record from crl.pem, which is only as current as that file)"
)


def ca_id(ca_cert: x509.Certificate) -> str:
    """What a record (and a party's revocation state) names its CA by: the certificate's SHA-256, hex."""
    return hashlib.sha256(ca_cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass(frozen=True)
class Revoked:
    """One revoked certificate: its serial, when it was revoked, and why (None: unspecified)."""

    serial: int
    revoked_at: dt.datetime
    reason: x509.ReasonFlags | None

    @classmethod
    def of(cls, entry: x509.RevokedCertificate) -> Revoked:
        try:
            reason: x509.ReasonFlags | None = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            reason = None
        return cls(entry.serial_number, entry.revocation_date_utc, reason)

    def entry(self) -> x509.RevokedCertificate:
        builder = x509.RevokedCertificateBuilder().serial_number(self.serial).revocation_date(self.revoked_at)
        if self.reason is not None and self.reason != x509.ReasonFlags.unspecified:
            builder = builder.add_extension(x509.CRLReason(self.reason), critical=False)
        return builder.build()


@dataclass(frozen=True)
class CaRecord:
    """The highest list number the CA has signed (0: none yet) and every certificate it has revoked."""

    ca: str
    number: int
    revoked: tuple[Revoked, ...]

    @property
    def serials(self) -> frozenset[int]:
        return frozenset(r.serial for r in self.revoked)

    def revoking(self, more: Iterable[Revoked]) -> CaRecord:
        """The record with ``more`` added; a serial already revoked keeps its first revocation."""
        known, added = self.serials, []
        for r in more:
            if r.serial not in known:
                known |= {r.serial}
                added.append(r)
        return replace(self, revoked=(*self.revoked, *added)) if added else self

    def signed(self) -> CaRecord:
        """The record once the CA signs its next list (one number more)."""
        return replace(self, number=self.number + 1)

    def to_json(self) -> bytes:
        revoked = [
            {
                "reason": r.reason.value if r.reason is not None else None,
                "revoked_at": r.revoked_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "serial": f"{r.serial:x}",
            }
            for r in self.revoked
        ]
        doc = {"ca": self.ca, "crl_number": self.number, "revoked": revoked, "v": 1}
        return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"


def fresh(ca_cert: x509.Certificate) -> CaRecord:
    """The record of a CA that has signed no list and revoked nothing."""
    return CaRecord(ca=ca_id(ca_cert), number=0, revoked=())


def from_list(ca_cert: x509.Certificate, crl: x509.CertificateRevocationList | None, number: int | None) -> CaRecord:
    """The record of a CA made before CAs kept one, started from its newest list ``crl`` (numbered ``number``,
    None for a list from before lists were numbered; no list: nothing revoked)."""
    record = fresh(ca_cert)
    if crl is None:
        return record
    return replace(record, number=number or 0).revoking(Revoked.of(entry) for entry in crl)


def _revoked(item: Any) -> Revoked:
    if not isinstance(item, dict) or set(item) != {"reason", "revoked_at", "serial"}:
        raise ValueError("an entry needs serial, revoked_at and reason")
    serial, at, reason = item["serial"], item["revoked_at"], item["reason"]
    if not isinstance(serial, str) or not _HEX.fullmatch(serial) or not isinstance(at, str):
        raise ValueError("a serial is lower-case hex")
    when = dt.datetime.strptime(at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    if reason is not None and not isinstance(reason, str):
        raise ValueError("a reason is a name")
    return Revoked(int(serial, 16), when, x509.ReasonFlags(reason) if reason is not None else None)


def parse(data: bytes, expected_ca: str, where: str = "the CA's record") -> CaRecord:
    """The record in ``data``, which must name the CA ``expected_ca``; ConfigError PKI_CA_RECORD_INVALID if not."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("v") != 1:
            raise ValueError("not a version 1 record")
        number, ca, items = doc["crl_number"], doc["ca"], doc["revoked"]
        if type(number) is not int or number < 0 or not isinstance(ca, str) or not isinstance(items, list):
            raise ValueError("malformed fields")
        revoked = tuple(_revoked(item) for item in items)
    except (ValueError, KeyError, TypeError, RecursionError):
        raise ConfigError(f"{where} is malformed", code="PKI_CA_RECORD_INVALID", hint=_RESTORE) from None
    if ca != expected_ca:
        raise ConfigError(
            f"{where} belongs to another CA than the one in this folder",
            code="PKI_CA_RECORD_INVALID",
            hint="put back the CA it belongs to, or the record that came with this CA",
        )
    if len({r.serial for r in revoked}) != len(revoked):
        raise ConfigError(f"{where} lists a certificate twice", code="PKI_CA_RECORD_INVALID", hint=_RESTORE)
    return CaRecord(ca=ca, number=number, revoked=revoked)


def load(path: Path, ca_cert: x509.Certificate) -> CaRecord | None:
    """The record at ``path`` (None when there is none); ConfigError when it is unreadable, malformed or another
    CA's: the CA signs nothing it cannot tell is complete."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            f"{path}: the CA's record cannot be read ({exc.strerror})", code="PKI_CA_RECORD_INVALID", hint=_RESTORE
        ) from None
    return parse(data, ca_id(ca_cert), str(path))


def save(path: Path, record: CaRecord) -> None:
    """Write the record atomically, mode 0600 (a crash leaves the old record or the new one, never half)."""
    write_file(path, record.to_json(), PRIVATE)
