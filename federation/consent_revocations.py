"""A consent issuer's revocation list: the grant ids it has revoked, under a number that only increases, signed.

``hpf consent revoke`` adds grant ids to the issuer's list and signs the next one; regions name the file per
issuer and re-read it when it changes on disk (:class:`RevocationWatch`), like the federation's certificate
revocation list (:mod:`federation.revocation`). The file is JSON::

    {"format": "hpf-consent-revocations-1", "issuer": "sh-consent", "number": 3,
     "revoked": ["<32 hex digits>", ...], "signature": "<base64 Ed25519>"}

The signature covers ``"hpf-consent-revocations-v1" 0x00 || issuer (u8 length) || number (u64) || the revoked
grant ids`` (16 bytes each, sorted, each once). A region keeps the list in force when a newer file is older
(a lower number), another list under the same number, or one that drops a grant the list in force revoked; a file
it cannot read or that the issuer did not sign refuses every consent of that issuer until it is fixed
(``CONSENT_REVOCATIONS_INVALID``): a region never silently forgets a revocation. A node keeps the number of each
issuer's newest list in its state directory, so a list older than that found after a restart refuses every
consent of the issuer too, until the newest is put back.

>>> key = Ed25519PrivateKey.generate()
>>> doc = sign_list(key, "sh-consent", 2, [bytes(16)])
>>> listed = read_list(doc, "sh-consent", consent.public_raw(key))
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

from federation import consent
from federation.config_files import FileStamp, file_stamp
from federation.errors import ConfigError
from federation.private_files import read_regular, write_file

log = logging.getLogger("hpf.consent")

FORMAT = "hpf-consent-revocations-1"
MAX_LIST_BYTES = 64 * 1024 * 1024  # about 1.8 million revoked grants
RECHECK_S = 1.0  # a region looks at the file at most once a second, not once per applicant
_TAG = b"hpf-consent-revocations-v1\x00"
_GRANT_HEX = re.compile(r"[0-9a-f]{32}")
_CODE = "CONSENT_REVOCATIONS_INVALID"


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
    public = consent.public_raw(key)
    current = (
        load_list(path, issuer, public)
        if path.exists() or path.is_symlink()
        else RevocationList(issuer, 0, frozenset(), "")
    )
    revoked = current.revoked | frozenset(grant_ids)
    data = sign_list(key, issuer, current.number + 1, revoked)
    write_file(path, data, 0o644)
    return read_list(data, issuer, public)


class RevocationWatch:
    """One issuer's list as a region holds it: re-read when the file changes (looked at once a second at most).

    ``state`` is a file where the number and digest of the list in force are kept across restarts (None: in memory
    only), so that a list older than one the region once held is refused after a restart too: the issuer's lists
    are unusable (every consent of the issuer refused) until the newest is put back.
    """

    def __init__(
        self,
        path: Path,
        issuer: str,
        public: bytes,
        *,
        clock: Callable[[], float] = time.monotonic,
        state: Path | None = None,
    ) -> None:
        self._path, self._issuer, self._public, self._clock = path, issuer, public, clock
        self._state = state
        self._lock = threading.Lock()
        self._in_force: RevocationList | None = None
        self._usable = False
        self._stamp: FileStamp | None = None
        self._looked = -float("inf")
        self._remembered = self._recall()
        self._refresh(force=True)

    def _recall(self) -> tuple[int, str]:
        """The number and digest of the newest list of this issuer's key this region accepted (0 and "" if none)."""
        if self._state is None:
            return 0, ""
        try:
            doc = json.loads(read_regular(self._state, 4096))
        except FileNotFoundError:
            return 0, ""
        except (OSError, ValueError, RecursionError):
            raise ConfigError(
                f"{self._state}: the consent revocation state cannot be read",
                code="CONFIG_INVALID",
                hint="restore the file from a backup, or remove it to start afresh from the lists on disk",
            ) from None
        if not isinstance(doc, dict) or doc.get("issuer") != self._issuer or doc.get("key") != self._public.hex():
            return 0, ""  # another issuer's key starts its lists afresh
        number, digest = doc.get("number"), doc.get("sha256")
        if type(number) is not int or not 0 <= number < 1 << 63 or not isinstance(digest, str):
            raise ConfigError(f"{self._state}: the consent revocation state is malformed", code="CONFIG_INVALID")
        return number, digest

    def _remember(self, listed: RevocationList) -> None:
        if self._state is None or (listed.number, listed.digest) == self._remembered:
            return
        doc = {"issuer": self._issuer, "key": self._public.hex(), "number": listed.number, "sha256": listed.digest}
        try:
            write_file(self._state, json.dumps(doc, sort_keys=True).encode() + b"\n", 0o600)
            self._remembered = (listed.number, listed.digest)
        except OSError as exc:  # the number still holds in memory
            log.error("cannot keep the consent revocation list number in %s (%s)", self._state, exc.strerror)

    @property
    def number(self) -> int:
        return self._in_force.number if self._in_force is not None else 0

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
            held = self._in_force
            number, digest = self._remembered
            if held is None and (listed.number < number or (listed.number == number and listed.digest != digest)):
                # older than, or another list under the number of, one this region held before a restart
                self._usable = False
                log.error(
                    "consent revocation list %d of %s refused: this region held list %d; every consent of the "
                    "issuer is refused until its newest list is put back",
                    listed.number,
                    self._issuer,
                    number,
                )
                return
            if held is not None and (
                listed.number < held.number
                or (listed.number == held.number and listed.digest != held.digest)
                or not held.revoked <= listed.revoked
            ):  # signed by the issuer but not newer: the list in force stays
                log.error(
                    "consent revocation list %d of %s refused; %d stays", listed.number, self._issuer, held.number
                )
                return
            self._in_force, self._usable = listed, True
            self._remember(listed)

    def revoked(self, grant_id: bytes) -> bool | None:
        self._refresh()
        if not self._usable or self._in_force is None:
            return None
        return grant_id in self._in_force.revoked
