"""A consent issuer's revocation list: the grant ids it has revoked, under a number that only increases, signed.

``hpf consent revoke`` adds grant ids to the issuer's list and signs the next one; regions name the file per
issuer and re-read it when it changes on disk (:class:`RevocationWatch`), like the federation's certificate
revocation list (:mod:`federation.trust.revocation`). The file is JSON::

    {"format": "hpf-consent-revocations-1", "issuer": "sh-consent", "number": 3,
     "revoked": ["<32 hex digits>", ...], "signature": "<base64 Ed25519>"}

The signature covers ``"hpf-consent-revocations-v1" 0x00 || issuer (u8 length) || number (u64) || the revoked
grant ids`` (16 bytes each, sorted, each once). A region keeps the list in force when a newer file is older
(a lower number), another list under the same number, or one that drops a grant the list in force revoked; a file
it cannot read or that the issuer did not sign refuses every consent of that issuer until it is fixed
(``CONSENT_REVOCATIONS_INVALID``): a region never silently forgets a revocation.

A region keeps the number and digest of each issuer's list in force in its state directory
(:class:`RevocationState`, ``<state_dir>/consent-revocation-state.json``), so an older list put back while it was
stopped is refused when it starts again (``CONSENT_REVOCATIONS_ROLLBACK``, or ``CONSENT_REVOCATIONS_CONFLICT``
for another list under the number it had accepted), exactly as one put back while it runs.

>>> key = Ed25519PrivateKey.generate()
>>> doc = sign_list(key, "sh-consent", 2, [bytes(16)])
>>> listed = read_list(doc, "sh-consent", public_raw(key))
>>> listed.number, bytes(16) in listed.revoked
(2, True)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hpf.federation.config_files import FileStamp, file_stamp
from hpf.federation.consent import tokens as consent
from hpf.federation.consent.issuer import public_raw
from hpf.federation.errors import ConfigError
from hpf.federation.private_files import read_regular, write_file

log = logging.getLogger("hpf.consent")

FORMAT = "hpf-consent-revocations-1"
MAX_LIST_BYTES = 64 * 1024 * 1024  # about 1.8 million revoked grants
RECHECK_S = 1.0  # a region looks at the file at most once a second, not once per applicant
_TAG = b"hpf-consent-revocations-v1\x00"
_GRANT_HEX = re.compile(r"[0-9a-f]{32}")
_CODE = "CONSENT_REVOCATIONS_INVALID"
STATE_FILE = "consent-revocation-state.json"
_STATE_FORMAT = "hpf-consent-revocation-state-1"
_STATE_HINT = "restore it; deleting it makes this region accept any list an issuer signed, however old"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class RevocationList:
    issuer: str
    number: int
    revoked: frozenset[bytes]
    digest: str  # SHA-256 of the signed statement: two lists under one number are told apart by it


def statement(issuer: str, number: int, revoked: Iterable[bytes]) -> bytes:
    """The bytes an issuer signs for a list."""
    name = issuer.encode("ascii")
    return _TAG + bytes([len(name)]) + name + struct.pack(">Q", number) + b"".join(sorted(set(revoked)))


def sign_list(key: Ed25519PrivateKey, issuer: str, number: int, revoked: Iterable[bytes]) -> bytes:
    """The file of a list, signed."""
    ids = sorted(set(revoked))
    if any(len(g) != consent.GRANT_ID_BYTES for g in ids) or not 0 <= number < 1 << 63:
        raise ValueError("grant ids are 16 bytes, and the number a non-negative 63-bit integer")
    doc = {
        "format": FORMAT,
        "issuer": issuer,
        "number": number,
        "revoked": [g.hex() for g in ids],
        "signature": base64.b64encode(key.sign(statement(issuer, number, ids))).decode("ascii"),
    }
    return (json.dumps(doc, indent=1) + "\n").encode("utf-8")


def _invalid(what: str) -> ConfigError:
    return ConfigError(f"consent revocation list: {what}", code=_CODE, hint=consent.REFUSALS[_CODE][1])


def read_list(data: bytes, issuer: str, public: bytes) -> RevocationList:
    """A list the issuer ``issuer`` (raw Ed25519 ``public`` key) signed; ConfigError ``CONSENT_REVOCATIONS_INVALID``
    for anything else."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise _invalid("not JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"format", "issuer", "number", "revoked", "signature"}:
        raise _invalid("not a consent revocation list")
    number, revoked, signature = doc["number"], doc["revoked"], doc["signature"]
    if doc["format"] != FORMAT or doc["issuer"] != issuer:
        raise _invalid("another format, or another issuer's list")
    if type(number) is not int or not 0 <= number < 1 << 63 or not isinstance(signature, str):
        raise _invalid("malformed number or signature")
    if not isinstance(revoked, list) or not all(isinstance(g, str) and _GRANT_HEX.fullmatch(g) for g in revoked):
        raise _invalid("revoked grants must be 32 lower-case hex digits each")
    ids = [bytes.fromhex(g) for g in revoked]
    if ids != sorted(set(ids)):
        raise _invalid("revoked grants must be sorted, each once")
    body = statement(issuer, number, ids)
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(base64.b64decode(signature, validate=True), body)
    except (InvalidSignature, binascii.Error, ValueError):
        raise _invalid("not signed by the issuer") from None
    return RevocationList(issuer, number, frozenset(ids), hashlib.sha256(body).hexdigest())


def load_list(path: Path, issuer: str, public: bytes) -> RevocationList:
    try:
        data = read_regular(path, MAX_LIST_BYTES)
    except OSError as exc:
        raise _invalid(f"{path} cannot be read ({exc.strerror or type(exc).__name__})") from None
    return read_list(data, issuer, public)


def revoke(path: Path, key: Ed25519PrivateKey, issuer: str, grant_ids: Iterable[bytes]) -> RevocationList:
    """Add ``grant_ids`` to the issuer's list at ``path`` (made when missing) and sign it under the next number."""
    public = public_raw(key)
    current = (
        load_list(path, issuer, public)
        if path.exists() or path.is_symlink()
        else RevocationList(issuer, 0, frozenset(), "")
    )
    revoked = current.revoked | frozenset(grant_ids)
    data = sign_list(key, issuer, current.number + 1, revoked)
    write_file(path, data, 0o644)
    return read_list(data, issuer, public)


class RevocationState:
    """The number and digest of each issuer's list a region has accepted, kept in one file across restarts.

    An entry is bound to the issuer's key: an issuer published under a new key starts its lists afresh. A state
    file that cannot be read stops the region (``CONSENT_REVOCATIONS_STATE_INVALID``): deleting it is the only way
    to forget a number, and that is the operator's decision.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._held: dict[str, dict[str, object]] = self._read()

    def _read(self) -> dict[str, dict[str, object]]:
        try:
            doc = json.loads(read_regular(self._path, 1 << 20))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError) as exc:
            raise self._malformed(f"cannot be read ({type(exc).__name__})") from None
        issuers = doc.get("issuers") if isinstance(doc, dict) and doc.get("format") == _STATE_FORMAT else None
        if not isinstance(issuers, dict):
            raise self._malformed("is malformed")
        for entry in issuers.values():
            if not (
                isinstance(entry, dict)
                and type(entry.get("number")) is int
                and 0 <= entry["number"] < 1 << 63
                and isinstance(entry.get("sha256"), str)
                and _SHA256.fullmatch(entry["sha256"])
                and isinstance(entry.get("key"), str)
            ):
                raise self._malformed("is malformed")
        return issuers

    def _malformed(self, what: str) -> ConfigError:
        return ConfigError(
            f"{self._path}: the consent revocation state {what}",
            code="CONSENT_REVOCATIONS_STATE_INVALID",
            hint=_STATE_HINT,
        )

    def remembered(self, issuer: str, public: bytes) -> tuple[int, str | None]:
        """The number and digest of the issuer's list last accepted under this key (0 and None: none)."""
        with self._lock:
            entry = self._held.get(issuer)
        if entry is None or entry["key"] != public.hex():
            return 0, None
        return int(str(entry["number"])), str(entry["sha256"])

    def remember(self, issuer: str, public: bytes, listed: RevocationList) -> None:
        with self._lock:
            self._held[issuer] = {"key": public.hex(), "number": listed.number, "sha256": listed.digest}
            doc = {"format": _STATE_FORMAT, "issuers": self._held}
            try:
                write_file(self._path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(), 0o600)
            except OSError as exc:  # the number still holds in memory
                log.error("cannot keep the consent revocation list number in %s (%s)", self._path, exc.strerror)


def _not_newer(listed: RevocationList, number: int, digest: str | None) -> str | None:
    """The code refusing ``listed`` over the list ``number`` (``digest``) accepted before, or None."""
    if listed.number < number:
        return "CONSENT_REVOCATIONS_ROLLBACK"
    if listed.number == number and digest is not None and listed.digest != digest:
        return "CONSENT_REVOCATIONS_CONFLICT"
    return None


class RevocationWatch:
    """One issuer's list as a region holds it: re-read when the file changes (looked at once a second at most).

    With a ``state``, a list must be no older than the one the region last accepted, even before a restart: at
    startup an older list is a ConfigError ``CONSENT_REVOCATIONS_ROLLBACK`` (or ``CONSENT_REVOCATIONS_CONFLICT``
    for another list under that number) and the region does not start on it; while running it is logged and the
    list in force stays. Each list put in force is remembered there.
    """

    def __init__(
        self,
        path: Path,
        issuer: str,
        public: bytes,
        *,
        clock: Callable[[], float] = time.monotonic,
        state: RevocationState | None = None,
    ) -> None:
        self._path, self._issuer, self._public, self._clock = path, issuer, public, clock
        self._state = state
        self._lock = threading.Lock()
        self._in_force: RevocationList | None = None
        self._usable = False
        self._stamp: FileStamp | None = None
        self._looked = -float("inf")
        self._refresh(force=True)

    @property
    def number(self) -> int:
        return self._in_force.number if self._in_force is not None else 0

    def _baseline(self) -> tuple[int, str | None, frozenset[bytes]]:
        """The number, digest and grants of the list a new one must not be older than."""
        if self._in_force is not None:
            return self._in_force.number, self._in_force.digest, self._in_force.revoked
        if self._state is not None:
            number, digest = self._state.remembered(self._issuer, self._public)
            return number, digest, frozenset()
        return 0, None, frozenset()

    def _refresh(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._looked < RECHECK_S:
            return
        with self._lock:
            self._looked = now
            stamp = file_stamp(self._path)
            if stamp == self._stamp and not force:
                return
            self._stamp = stamp
            try:
                listed = load_list(self._path, self._issuer, self._public)
            except ConfigError as err:
                self._usable = False
                log.error("consent revocations of %s unusable: %s", self._issuer, err.message)
                return
            number, digest, revoked = self._baseline()
            code = _not_newer(listed, number, digest)
            if code is None and not revoked <= listed.revoked:
                code = "CONSENT_REVOCATIONS_SHRUNK"
            if code is not None:  # signed by the issuer but not newer: the list in force (or none) stays
                if force:
                    what = "older than" if code.endswith("ROLLBACK") else "not"
                    raise ConfigError(
                        f"{self._path}: consent revocation list {listed.number} of {self._issuer} is {what} list "
                        f"{number}, which this region has accepted",
                        code=code,
                        hint="put the issuer's newest signed list back (hpf consent revoke writes it)",
                    )
                log.error(
                    "consent revocation list %d of %s refused (%s); %d stays", listed.number, self._issuer, code, number
                )
                return
            self._in_force, self._usable = listed, True
            if self._state is not None and (listed.number, listed.digest) != (number, digest):
                self._state.remember(self._issuer, self._public, listed)

    def revoked(self, grant_id: bytes) -> bool | None:
        self._refresh()
        if not self._usable or self._in_force is None:
            return None
        return grant_id in self._in_force.revoked
