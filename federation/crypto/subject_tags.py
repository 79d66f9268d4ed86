"""Who looked a person up, answered from a region's audit log without an identifier in it: keyed hashes.

A lookup's audit entry holds, for each person it named, :func:`subject_tag`: a keyed hash under the region's
subject key (``subject-tag.key``, :func:`federation.crypto.sealing.load_or_create_subject_key`), which only the
region and the auditors it trusts hold, salted with the request's nonce, so two lookups of the same person cannot be
linked without the key. With consent tokens, it holds the same kind of hash of each person's grant
(:func:`consent_tags`), so an auditor holding the key and a grant's id answers "under which consent was this person
looked up?". No unkeyed hash of an identifier is made anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from hpf.federation.consent.tokens import Token

TAG_BYTES = 16

_TAG_DOMAIN = b"hpf-lookup-subject/v1\x00"
_CONSENT_DOMAIN = b"hpf-lookup-consent/v1\x00"


def subject_tag(key: bytes, nonce_hex: str, person_id: str) -> str:
    """Keyed hash of one looked-up identifier in one request (hex, 128 bits): HMAC-SHA256 over the request's
    nonce and the identifier. Without ``key`` it cannot be tested against a guess, nor linked across requests."""
    return subject_tags(key, nonce_hex, [person_id])[0]


def looked_up(entry: Mapping[str, object], key: bytes, person_id: str) -> bool:
    """Whether an audit entry is a request that looked ``person_id`` up (``key``: its region's subject key)."""
    tags, nonce = entry.get("subjects"), entry.get("nonce")
    if not isinstance(tags, str) or not isinstance(nonce, str):
        return False
    return subject_tag(key, nonce, person_id) in tags.split(" ")


def consent_tags(key: bytes, nonce_hex: str, tokens: Sequence[Token | None]) -> list[str]:
    """Keyed hash of each looked-up person's consent (its issuer and grant id) in one request, as
    :func:`subject_tags` hashes the identifiers, in the same order; ``-`` for a token that could not be read
    (None). With the
    region's subject key and a grant's id (the issuer keeps them), an auditor answers "under which consent was
    this person looked up?" (:func:`looked_up_under`)."""
    base = hmac.new(key, _CONSENT_DOMAIN + nonce_hex.encode("ascii") + b"\x00", hashlib.sha256)
    out = []
    for parsed in tokens:
        if parsed is None:
            out.append("-")
            continue
        mac = base.copy()
        mac.update(parsed.issuer.encode("ascii") + b"\x00" + parsed.grant.grant_id)
        out.append(mac.hexdigest()[: 2 * TAG_BYTES])
    return out


def grant_tag(key: bytes, nonce_hex: str, issuer: str, grant_id: bytes) -> str:
    """:func:`consent_tags` of one grant (``issuer``'s ``grant_id``) in the request of ``nonce_hex``."""
    mac = hmac.new(key, _CONSENT_DOMAIN + nonce_hex.encode("ascii") + b"\x00", hashlib.sha256)
    mac.update(issuer.encode("ascii") + b"\x00" + grant_id)
    return mac.hexdigest()[: 2 * TAG_BYTES]


def consents_of(entry: Mapping[str, object], key: bytes, person_id: str) -> list[str] | None:
    """The consent digests (:func:`consent_tags`) under which an audit entry looked ``person_id`` up, once per time
    the request named the person; ``-`` for a token that could not be read. None when the entry did not look the
    person up; an empty list when it did without tokens (a role whose lookups take free-text consent)."""
    tags, nonce = entry.get("subjects"), entry.get("nonce")
    if not isinstance(tags, str) or not isinstance(nonce, str):
        return None
    want = subject_tag(key, nonce, person_id)
    people = tags.split(" ")
    places = [i for i, tag in enumerate(people) if tag == want]
    if not places:
        return None
    consents = entry.get("consents")
    grants = consents.split(" ") if isinstance(consents, str) else []
    if len(grants) != len(people):
        return []
    return [grants[i] for i in places]


def looked_up_under(entry: Mapping[str, object], key: bytes, person_id: str, issuer: str, grant_id: bytes) -> bool:
    """Whether an audit entry looked ``person_id`` up under the grant ``grant_id`` of ``issuer``."""
    nonce = entry.get("nonce")
    found = consents_of(entry, key, person_id)
    if not found or not isinstance(nonce, str):
        return False
    return grant_tag(key, nonce, issuer, grant_id) in found


def subject_tags(key: bytes, nonce_hex: str, person_ids: Sequence[str]) -> list[str]:
    """:func:`subject_tag` of each identifier, the key schedule and the request's prefix hashed once."""
    base = hmac.new(key, _TAG_DOMAIN + nonce_hex.encode("ascii") + b"\x00", hashlib.sha256)
    out = []
    for pid in person_ids:
        mac = base.copy()
        mac.update(pid.encode("ascii"))
        out.append(mac.hexdigest()[: 2 * TAG_BYTES])
    return out
