"""A consent service's side: its key, and granting people in batches (``hpf consent ...``).

:func:`issue_batch` grants one token per person under one signed Merkle root (:mod:`federation.consent.tokens`
describes the token); :func:`grant_csv` grants a CSV of people, batch by batch.

An issuer's folder (``consent-issuer/`` by default) holds ``issuer.key``, its Ed25519 signing key (PKCS#8 PEM,
mode 0600), and ``issuer.yaml``, its id and public key, which is the entry the catalog publishes under
``issuers:``. Granting reads a CSV with a ``person_id`` column and writes, row by row, the other columns, the
grant's id and the person's token; no identifier is written to a log or a message, only line numbers.

A grantee is named by its certificate (PEM file) or by ``sha256:`` and the 64 hex digits of its public key's
digest (:func:`federation.consent.tokens.grantee_of`), which ``hpf consent grant`` prints for every batch.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hpf.federation.audit import merkle
from hpf.federation.consent import tokens as consent
from hpf.federation.errors import ConfigError, FederationError, PlanError, quoted
from hpf.federation.person_id import read_people_file, validate_person_id
from hpf.federation.private_files import create_file, read_regular, write_file

KEY = "issuer.key"
PUBLIC = "issuer.yaml"
MAX_DAYS = 366  # a consent outlives no application; a longer one is a new grant
_GRANTEE = re.compile(r"sha256:([0-9a-f]{64})")


def public_raw(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32 bytes of an issuer's public key (as the catalog publishes it, in base64)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def check_terms(issuer: str, grantee: bytes, purpose: str, facts: Iterable[str], not_after: int) -> int:
    """ValueError unless these are terms a token can carry; the facts' bit set otherwise."""
    if not consent.ISSUER_ID.fullmatch(issuer):
        raise ValueError("an issuer id is lower-case letters, digits and '-' (e.g. shanghai-consent)")
    if len(grantee) != 32:
        raise ValueError("a grantee is the 32-byte SHA-256 of its certificate's public key")
    if not consent.PURPOSE.fullmatch(purpose):
        raise ValueError("a purpose code is lower-case letters, digits, '-' and '_' (e.g. loan-review)")
    bits = consent.fact_bits(facts)
    if not bits:
        raise ValueError(f"name at least one fact: {', '.join(consent.FACTS)}")
    if not 0 <= not_after < 1 << 63:
        raise ValueError("the expiry is out of range")
    return bits


def issue_batch(
    key: Ed25519PrivateKey,
    issuer: str,
    person_ids: Sequence[str],
    *,
    grantee: bytes,
    purpose: str,
    facts: Iterable[str],
    not_after: int,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> list[consent.Token]:
    """One token per person, in order, under one signed root. Every identifier must be valid
    (``PERSON_ID_INVALID`` otherwise, never naming it)."""
    bits = check_terms(issuer, grantee, purpose, facts, not_after)
    if not 1 <= len(person_ids) <= consent.MAX_BATCH:
        raise ValueError(f"a batch holds 1 to {consent.MAX_BATCH} grants")
    salts, grants = [], []
    for pid in person_ids:
        salt = random_bytes(consent.SALT_BYTES)
        salts.append(salt)
        grant_id = random_bytes(consent.GRANT_ID_BYTES)
        grants.append(
            consent.Grant(
                grant_id, grantee, purpose, bits, not_after, consent.commitment(salt, validate_person_id(pid))
            )
        )
    tree = merkle.MerkleTree(g.leaf() for g in grants)
    size = len(grants)
    signature = key.sign(consent.root_statement(issuer, size, tree.root()))
    return [
        consent.Token(issuer, size, i, signature, grant, salt, tuple(tree.inclusion_proof(i)))
        for i, (grant, salt) in enumerate(zip(grants, salts, strict=True))
    ]


@dataclass(frozen=True)
class Issuer:
    id: str
    key: Ed25519PrivateKey

    @property
    def public_b64(self) -> str:
        return base64.b64encode(public_raw(self.key)).decode("ascii")

    def catalog_entry(self) -> str:
        """The lines to add under the catalog's ``issuers:``.

        >>> key = Ed25519PrivateKey.from_private_bytes(bytes(32))
        >>> print(Issuer("sh-consent", key).catalog_entry(), end="")
        - id: sh-consent
          key: O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=
        """
        return f"- id: {self.id}\n  key: {self.public_b64}\n"


def _key_error(path: Path, what: str) -> ConfigError:
    return ConfigError(f"{path}: {what}", code="CONSENT_KEY_INVALID", hint="make one with `hpf consent keys`")


def load_issuer(folder: Path) -> Issuer:
    """The issuer kept in ``folder``; ``CONSENT_KEY_INVALID`` when its files are missing or do not match."""
    try:
        pem = read_regular(folder / KEY, 64 * 1024)
        doc = yaml.safe_load(read_regular(folder / PUBLIC, 64 * 1024))
    except OSError as exc:
        raise _key_error(folder, f"no consent issuer here ({exc.strerror or type(exc).__name__})") from None
    except yaml.YAMLError:
        raise _key_error(folder / PUBLIC, "not YAML") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise _key_error(folder / KEY, "not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise _key_error(folder / KEY, "not an Ed25519 key")
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not consent.ISSUER_ID.fullmatch(doc["id"]):
        raise _key_error(folder / PUBLIC, "no valid issuer id")
    issuer = Issuer(doc["id"], key)
    if doc.get("key") != issuer.public_b64:
        raise _key_error(folder / PUBLIC, "the public key is not the key's in issuer.key")
    return issuer


def make_issuer(folder: Path, issuer_id: str | None) -> tuple[Issuer, bool]:
    """The issuer in ``folder``, made when there is none (True when made). An existing one keeps its id:
    naming another is ``CONSENT_KEY_CONFLICT``."""
    if (folder / KEY).exists():
        issuer = load_issuer(folder)
        if issuer_id is not None and issuer_id != issuer.id:
            raise ConfigError(
                f"{folder} holds issuer {issuer.id}, not {quoted(issuer_id)}",
                code="CONSENT_KEY_CONFLICT",
                hint="give another --dir for another issuer",
            )
        return issuer, False
    if issuer_id is None or not consent.ISSUER_ID.fullmatch(issuer_id):
        raise ConfigError(
            "a new issuer needs an id: lower-case letters, digits and '-'",
            code="CONSENT_KEY_INVALID",
            hint="e.g. --issuer shanghai-consent",
        )
    folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    if not create_file(folder / KEY, pem, 0o600):
        return load_issuer(folder), False  # another maker was first
    issuer = Issuer(issuer_id, key)
    write_file(folder / PUBLIC, f"id: {issuer.id}\nkey: {issuer.public_b64}\n".encode(), 0o644)
    return issuer, True


def grantee_from(text: str) -> bytes:
    """A grantee from ``sha256:HEX`` or a certificate's PEM file; ``CONSENT_GRANTEE_INVALID`` otherwise."""
    if found := _GRANTEE.fullmatch(text.strip().lower()):
        return bytes.fromhex(found[1])
    from hpf.federation.trust import certificates

    try:
        cert = certificates.load_certificate(read_regular(Path(text), 1024 * 1024))
    except (OSError, ValueError, FederationError):
        raise ConfigError(
            f"{quoted(text)} is neither a certificate file nor sha256:<64 hex digits>",
            code="CONSENT_GRANTEE_INVALID",
            hint="give the grantee's certificate (PEM), e.g. pki/people/bank.pem",
        ) from None
    return consent.grantee_of(cert)


def grantee_text(grantee: bytes) -> str:
    return "sha256:" + grantee.hex()


def read_people(path: Path, column: str = "person_id") -> tuple[list[str], list[dict[str, str]], list[str]]:
    """The CSV's columns, rows and normalised identifiers; a bad identifier is named by its line only."""
    return read_people_file(
        path,
        code="CONSENT_INPUT_INVALID",
        unreadable_code="CONSENT_INPUT_INVALID",
        nothing="nothing was granted",
        column=column,
    )


@dataclass(frozen=True)
class Granted:
    count: int
    batches: int
    not_after: dt.datetime


def grant_csv(
    issuer: Issuer,
    people: Path,
    output: Path,
    *,
    grantee: bytes,
    purpose: str,
    facts: Sequence[str],
    days: int,
    column: str = "person_id",
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> Granted:
    """Grant every person of ``people`` and write ``output``: ``row`` (the data row, from 1), the input's other
    columns, ``grant_id`` and ``consent_token``, in input order."""
    if not 1 <= days <= MAX_DAYS:
        raise PlanError(f"a consent lasts 1 to {MAX_DAYS} days", code="CONSENT_TERMS_INVALID")
    not_after = now().replace(microsecond=0) + dt.timedelta(days=days)
    try:
        check_terms(issuer.id, grantee, purpose, facts, int(not_after.timestamp()))
    except ValueError as err:
        raise PlanError(str(err), code="CONSENT_TERMS_INVALID") from None
    columns, rows, ids = read_people(people, column)
    tokens: list[consent.Token] = []
    batches = 0
    for start in range(0, len(ids), consent.MAX_BATCH):
        chunk = ids[start : start + consent.MAX_BATCH]
        tokens += issue_batch(
            issuer.key,
            issuer.id,
            chunk,
            grantee=grantee,
            purpose=purpose,
            facts=facts,
            not_after=int(not_after.timestamp()),
        )
        batches += 1
    kept = [c for c in columns if c not in (column, "grant_id", "consent_token")]  # a new grant replaces an old one
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["row", *kept, "grant_id", "consent_token"], lineterminator="\n")
    writer.writeheader()
    for n, (row, token) in enumerate(zip(rows, tokens, strict=True), start=1):
        writer.writerow(
            {
                "row": n,
                **{c: row.get(c) for c in kept},
                "grant_id": token.grant.grant_id.hex(),
                "consent_token": consent.token_text(token),
            }
        )
    write_file(output, out.getvalue().encode("utf-8"), 0o600)
    return Granted(len(tokens), batches, not_after)


def grant_ids_from(words: Sequence[str]) -> list[bytes]:
    """Grant ids from 32 hex digits or whole tokens; ``CONSENT_MALFORMED`` names the position of one that is
    neither."""
    ids = []
    for i, word in enumerate(words, start=1):
        w = word.strip()
        if re.fullmatch(r"[0-9a-fA-F]{32}", w):
            ids.append(bytes.fromhex(w))
            continue
        try:
            ids.append(consent.parse_token_text(w).grant.grant_id)
        except consent.ConsentError:
            raise consent.ConsentError(
                f"argument {i} is neither a grant id (32 hex digits) nor a consent token",
                code="CONSENT_MALFORMED",
                hint="give the grant_id or consent_token column of the file `hpf consent grant` wrote",
            ) from None
    return ids
