"""Consent tokens as an attacker sees them: every forgery, alteration, misuse and replay is refused with the code
of the check it fails, and reading any bytes is total."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from examples import budget
from hypothesis import given, settings
from hypothesis import strategies as st

from hpf.federation.audit import merkle
from hpf.federation.catalog import Catalog
from hpf.federation.catalog_parties import IssuerEntry
from hpf.federation.consent import revocations as consent_revocations
from hpf.federation.consent import tokens as consent
from hpf.federation.consent.issuer import issue_batch, public_raw
from hpf.federation.consent.tokens import ConsentError, Token, parse_token, parse_token_text
from hpf.federation.consent.verifier import ConsentVerifier
from hpf.federation.errors import ConfigError, FederationError
from hpf.federation.person_id import person_id_array

NOW = 1_767_225_600  # 2026-01-01
DAY = 86_400
BANK = bytes(range(32))
OTHER_BANK = bytes(range(1, 33))
ISSUER = "sh-consent"
PEOPLE = list(person_id_array([310101] * 7, [19900101 + i for i in range(7)], [11] * 7))
TERMS = {"grantee": BANK, "purpose": "loan-review", "facts": ["duplicate_loans", "loan_cities"]}
ASK = {"grantee": BANK, "purpose": "loan-review", "facts": ["duplicate_loans"]}

KEY = Ed25519PrivateKey.generate()
TOKENS = issue_batch(KEY, ISSUER, PEOPLE, not_after=NOW + 30 * DAY, **TERMS)  # type: ignore[arg-type]


def verifier(**kwargs: object) -> ConsentVerifier:
    issuers = kwargs.pop("issuers", {ISSUER: public_raw(KEY)})
    kwargs.setdefault("now", lambda: NOW)
    return ConsentVerifier(issuers, **kwargs)  # type: ignore[arg-type]


def test_every_honest_token_opens_to_its_person_only() -> None:
    v = verifier()
    for i, token in enumerate(TOKENS):
        assert v.check(token, PEOPLE[i], **ASK) is None  # type: ignore[arg-type]
        assert v.check(token.encode(), PEOPLE[i].lower(), **ASK) is None  # type: ignore[arg-type]
        other = PEOPLE[(i + 1) % len(PEOPLE)]
        assert v.check(token, other, **ASK) == "CONSENT_PERSON_MISMATCH"  # type: ignore[arg-type]


def test_text_and_binary_forms_round_trip_within_the_bound() -> None:
    for token in TOKENS:
        assert parse_token(token.encode()) == token
        text = consent.token_text(token)
        assert parse_token_text(text) == token and len(text) <= consent.MAX_TOKEN_TEXT
        assert "=" not in text and "+" not in text and "/" not in text
        assert PEOPLE[0] not in text and PEOPLE[0].encode() not in token.encode()


def test_one_signature_check_per_batch() -> None:
    v = verifier()
    real = v._keys[ISSUER]
    calls = []

    class Counted:
        def verify(self, signature: bytes, data: bytes) -> None:
            calls.append(1)
            real.verify(signature, data)

    v._keys[ISSUER] = Counted()  # type: ignore[assignment]
    for i, token in enumerate(TOKENS):
        assert v.check(token, PEOPLE[i], **ASK) is None  # type: ignore[arg-type]
    assert v.check(dataclasses.replace(TOKENS[0], signature=bytes(64)), PEOPLE[0], **ASK) is not None  # type: ignore[arg-type]
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("ask", "code"),
    [
        ({**ASK, "grantee": OTHER_BANK}, "CONSENT_GRANTEE_MISMATCH"),
        ({**ASK, "purpose": "marketing"}, "CONSENT_PURPOSE_MISMATCH"),
        ({**ASK, "facts": ["balance"]}, "CONSENT_FACTS_NOT_GRANTED"),
        ({**ASK, "facts": ["duplicate_loans", "contributions"]}, "CONSENT_FACTS_NOT_GRANTED"),
        ({**ASK, "facts": ["no_such_fact"]}, "CONSENT_FACTS_NOT_GRANTED"),
    ],
)
def test_a_token_used_beyond_its_grant_is_refused(ask: dict[str, object], code: str) -> None:
    assert verifier().check(TOKENS[0], PEOPLE[0], **ask) == code  # type: ignore[arg-type]


def test_expiry_is_inclusive_then_refused() -> None:
    token = TOKENS[0]
    at = token.grant.not_after
    assert verifier(now=lambda: at).check(token, PEOPLE[0], **ASK) is None  # type: ignore[arg-type]
    assert verifier(now=lambda: at + 1).check(token, PEOPLE[0], **ASK) == "CONSENT_EXPIRED"  # type: ignore[arg-type]


def test_issuer_not_accepted_by_this_policy() -> None:
    other = Ed25519PrivateKey.generate()
    v = verifier(issuers={"bj-consent": public_raw(other)})
    assert v.check(TOKENS[0], PEOPLE[0], **ASK) == "CONSENT_ISSUER_UNKNOWN"  # type: ignore[arg-type]


def test_a_root_signed_by_another_key_is_forged() -> None:
    impostor = Ed25519PrivateKey.generate()  # claims to be sh-consent
    forged = issue_batch(impostor, ISSUER, PEOPLE[:2], not_after=NOW + DAY, **TERMS)  # type: ignore[arg-type]
    assert verifier().check(forged[0], PEOPLE[0], **ASK) == "CONSENT_SIGNATURE_INVALID"  # type: ignore[arg-type]


def _grant_variants(token: Token) -> Iterator[tuple[str, Token]]:
    g = token.grant
    yield "grant_id", dataclasses.replace(token, grant=dataclasses.replace(g, grant_id=bytes(16)))
    yield "grantee", dataclasses.replace(token, grant=dataclasses.replace(g, grantee=OTHER_BANK))
    yield "purpose", dataclasses.replace(token, grant=dataclasses.replace(g, purpose="marketing"))
    yield "facts", dataclasses.replace(token, grant=dataclasses.replace(g, facts=0b1111))
    yield "not_after", dataclasses.replace(token, grant=dataclasses.replace(g, not_after=g.not_after + 365 * DAY))
    yield (
        "commitment",
        dataclasses.replace(token, grant=dataclasses.replace(g, commitment=consent.commitment(token.salt, PEOPLE[6]))),
    )
    yield "issuer", dataclasses.replace(token, issuer="bj-consent")
    yield "batch_size", dataclasses.replace(token, batch_size=token.batch_size + 1)
    yield "index", dataclasses.replace(token, index=(token.index + 1) % token.batch_size)
    yield "signature", dataclasses.replace(token, signature=bytes(64))
    yield "path", dataclasses.replace(token, path=(bytes(32), *token.path[1:]))
    yield "path_short", dataclasses.replace(token, path=token.path[:-1])


@pytest.mark.parametrize("warm", [False, True], ids=["fresh", "after-the-batch"])
@pytest.mark.parametrize("field", [name for name, _ in _grant_variants(TOKENS[3])])
def test_each_field_altered_is_refused(field: str, warm: bool) -> None:
    """Altering any signed field (even to another valid grant's terms) breaks the signature; the issuer, when
    changed to one the policy also accepts, the same. So too for a verifier that has already proven every node
    of the batch (it stops climbing at a proven node)."""
    tampered = dict(_grant_variants(TOKENS[3]))[field]
    issuers = {ISSUER: public_raw(KEY), "bj-consent": public_raw(KEY)}
    v = verifier(issuers=issuers)
    if warm:
        assert [v.check(t, PEOPLE[i], **ASK) for i, t in enumerate(TOKENS)] == [None] * len(TOKENS)  # type: ignore[arg-type]
    code = v.check(parse_token(tampered.encode()), PEOPLE[3], **ASK)  # type: ignore[arg-type]
    if field == "path_short" and warm:  # a shorter path to a node already proven is still a proof of the grant
        assert code in (None, "CONSENT_SIGNATURE_INVALID")
    else:
        assert code == "CONSENT_SIGNATURE_INVALID", field


def test_a_large_batch_stops_climbing_at_proven_nodes() -> None:
    people = list(person_id_array([310101] * 300, [19900101] * 300, list(range(300))))
    tokens = issue_batch(KEY, ISSUER, people, not_after=NOW + DAY, **TERMS)  # type: ignore[arg-type]
    v = verifier()
    assert [v.check(t, people[i], **ASK) for i, t in enumerate(tokens)] == [None] * 300  # type: ignore[arg-type]
    (batch,) = (b for _, b in v._batches._items.items())
    assert batch.valid and 0 < len(batch.nodes) < 300
    forged = dataclasses.replace(tokens[7], path=(bytes(32), *tokens[7].path[1:]))
    assert v.check(forged, people[7], **ASK) == "CONSENT_SIGNATURE_INVALID"  # type: ignore[arg-type]
    other = dataclasses.replace(tokens[9], grant=dataclasses.replace(tokens[9].grant, purpose="marketing"))
    assert v.check(other, people[9], **{**ASK, "purpose": "marketing"}) == "CONSENT_SIGNATURE_INVALID"  # type: ignore[arg-type]


def test_the_salt_altered_opens_to_nobody() -> None:
    tampered = dataclasses.replace(TOKENS[3], salt=bytes(32))
    assert verifier().check(tampered, PEOPLE[3], **ASK) == "CONSENT_PERSON_MISMATCH"  # type: ignore[arg-type]


def test_a_path_for_another_leaf_is_refused() -> None:
    """Another token's path (a real path, of the same batch) proves nothing about this grant."""
    borrowed = dataclasses.replace(TOKENS[2], path=TOKENS[5].path, index=TOKENS[5].index)
    assert verifier().check(borrowed, PEOPLE[2], **ASK) == "CONSENT_SIGNATURE_INVALID"  # type: ignore[arg-type]


def test_replay_for_another_person_is_refused_even_with_the_salt_known() -> None:
    """A bank holding a token for one person cannot use it for another: the commitment opens only to the first,
    and re-committing to the other person changes the leaf, which the signed root no longer covers."""
    v = verifier()
    token = TOKENS[0]
    assert v.check(token, PEOPLE[1], **ASK) == "CONSENT_PERSON_MISMATCH"  # type: ignore[arg-type]
    salt = bytes(32)
    rebound = dataclasses.replace(
        token, salt=salt, grant=dataclasses.replace(token.grant, commitment=consent.commitment(salt, PEOPLE[1]))
    )
    assert v.check(rebound, PEOPLE[1], **ASK) == "CONSENT_SIGNATURE_INVALID"  # type: ignore[arg-type]


def test_checks_run_in_their_stated_order() -> None:
    """A token wrong in every way names the first check."""
    v = verifier()
    assert list(consent.REFUSALS)[:9] == [
        "CONSENT_MALFORMED",
        "CONSENT_ISSUER_UNKNOWN",
        "CONSENT_SIGNATURE_INVALID",
        "CONSENT_GRANTEE_MISMATCH",
        "CONSENT_PURPOSE_MISMATCH",
        "CONSENT_FACTS_NOT_GRANTED",
        "CONSENT_EXPIRED",
        "CONSENT_REVOKED",
        "CONSENT_PERSON_MISMATCH",
    ]
    late = ConsentVerifier({ISSUER: public_raw(KEY)}, now=lambda: NOW + 365 * DAY)
    wrong = {"grantee": OTHER_BANK, "purpose": "marketing", "facts": ["balance"]}
    assert late.check(TOKENS[0], PEOPLE[1], **wrong) == "CONSENT_GRANTEE_MISMATCH"  # type: ignore[arg-type]
    assert late.check(TOKENS[0], PEOPLE[1], **{**wrong, "grantee": BANK}) == "CONSENT_PURPOSE_MISMATCH"  # type: ignore[arg-type]
    assert late.check(TOKENS[0], PEOPLE[1], **ASK) == "CONSENT_EXPIRED"  # type: ignore[arg-type]
    assert v.check(b"\x01", PEOPLE[0], **ASK) == "CONSENT_MALFORMED"  # type: ignore[arg-type]


def test_every_code_is_registered_with_a_class() -> None:
    for code in consent.CODES:
        err = consent.refusal(code)
        assert type(err) is not FederationError and err.code == code and err.hint


# --- reading bytes: total ----------------------------------------------------------------------------------------


@settings(max_examples=budget(300), deadline=None)
@given(st.binary(max_size=consent.MAX_TOKEN_BYTES + 8))
def test_any_bytes_give_a_token_or_malformed(data: bytes) -> None:
    try:
        token = parse_token(data)
    except ConsentError as err:
        assert err.code == "CONSENT_MALFORMED"
    else:
        assert token.encode() == data
    assert verifier().check(data, PEOPLE[0], **ASK) in {"CONSENT_MALFORMED", *consent.CODES}  # type: ignore[arg-type]


@settings(max_examples=budget(300), deadline=None)
@given(st.data())
def test_a_real_token_cut_or_flipped_is_never_accepted(data: st.DataObject) -> None:
    raw = TOKENS[4].encode()
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(ConsentError) as refused:
        parse_token(raw[:cut])
    assert refused.value.code == "CONSENT_MALFORMED"
    at = data.draw(st.integers(0, len(raw) - 1))
    bit = data.draw(st.integers(0, 7))
    flipped = raw[:at] + bytes([raw[at] ^ (1 << bit)]) + raw[at + 1 :]
    assert verifier().check(flipped, PEOPLE[4], **ASK) is not None  # type: ignore[arg-type]


@settings(max_examples=budget(200), deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_a_token_or_malformed(text: str) -> None:
    try:
        parse_token_text(text)
    except ConsentError as err:
        assert err.code == "CONSENT_MALFORMED"


def test_too_long_or_odd_inputs_are_malformed() -> None:
    raw = TOKENS[0].encode()
    for data in (b"", raw + b"\x00", b"\x01" * (consent.MAX_TOKEN_BYTES + 1), bytes([2]) + raw[1:]):
        with pytest.raises(ConsentError):
            parse_token(data)
    with pytest.raises(ConsentError):
        parse_token_text("A" * (consent.MAX_TOKEN_TEXT + 10))
    with pytest.raises(ConsentError):
        parse_token(None)  # type: ignore[arg-type]
    assert verifier().check(TOKENS[0], None, **ASK) == "CONSENT_PERSON_MISMATCH"  # type: ignore[arg-type]


def test_a_batch_of_one_and_an_odd_batch() -> None:
    for n in (1, 3, 5):
        tokens = issue_batch(KEY, ISSUER, PEOPLE[:n], not_after=NOW + DAY, **TERMS)  # type: ignore[arg-type]
        assert [verifier().check(t, PEOPLE[i], **ASK) for i, t in enumerate(tokens)] == [None] * n  # type: ignore[arg-type]
        assert max(len(t.path) for t in tokens) == (n - 1).bit_length()


def test_issuing_refuses_bad_terms_and_ids_without_naming_them() -> None:
    with pytest.raises(ValueError, match="unknown fact"):
        issue_batch(KEY, ISSUER, PEOPLE[:1], grantee=BANK, purpose="p", facts=["everything"], not_after=NOW)
    with pytest.raises(ValueError, match="at least one fact"):
        issue_batch(KEY, ISSUER, PEOPLE[:1], grantee=BANK, purpose="p", facts=[], not_after=NOW)
    with pytest.raises(ValueError):
        issue_batch(KEY, "Bad Issuer", PEOPLE[:1], **TERMS, not_after=NOW)  # type: ignore[arg-type]
    with pytest.raises(FederationError) as bad:
        issue_batch(KEY, ISSUER, ["310101199001010110"], **TERMS, not_after=NOW)  # type: ignore[arg-type]
    assert bad.value.code == "PERSON_ID_INVALID" and "310101" not in str(bad.value)


def test_token_size() -> None:
    """A grant's fixed part plus one hash per tree level: the figure the design states."""
    raw = TOKENS[0].encode()
    fixed = 1 + 1 + len(ISSUER) + 8 + 64 + 16 + 32 + 1 + len("loan-review") + 10 + 32 + 32 + 1
    assert len(raw) == fixed + 32 * len(TOKENS[0].path)
    assert struct.unpack(">I", raw[2 + len(ISSUER) : 6 + len(ISSUER)])[0] == len(PEOPLE)


# --- the catalog's issuers ----------------------------------------------------------------------------------------


def test_the_catalog_publishes_issuers_and_validates_their_keys() -> None:
    import base64

    key = base64.b64encode(public_raw(KEY)).decode()
    base = {
        "federation": "f",
        "nodes": [{"id": "n1", "address": "h:1"}],
        "tables": {"t": {"columns": {"x": {"type": "BIGINT"}}}},
    }
    cat = Catalog.model_validate({**base, "issuers": [{"id": ISSUER, "key": key}]})
    assert cat.issuer_keys([ISSUER, "unlisted"]) == {ISSUER: public_raw(KEY)}
    assert Catalog.model_validate(base).issuers == []
    for bad in ({"id": ISSUER, "key": "QUJD"}, {"id": "Bad_Id", "key": key}, {"id": ISSUER, "key": key, "x": 1}):
        with pytest.raises(ValueError):
            IssuerEntry.model_validate(bad)
    with pytest.raises(ValueError, match="twice"):
        Catalog.model_validate({**base, "issuers": [{"id": ISSUER, "key": key}] * 2})


# --- revocation ---------------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_revoked_grants_are_refused_and_the_list_is_reread(tmp_path: Path) -> None:
    path, clock = tmp_path / "revocations.json", Clock()
    consent_revocations.revoke(path, KEY, ISSUER, [TOKENS[1].grant.grant_id])
    watch = consent_revocations.RevocationWatch(path, ISSUER, public_raw(KEY), clock=clock)
    v = verifier(revocations={ISSUER: watch})
    assert v.check(TOKENS[1], PEOPLE[1], **ASK) == "CONSENT_REVOKED"  # type: ignore[arg-type]
    assert v.check(TOKENS[2], PEOPLE[2], **ASK) is None  # type: ignore[arg-type]
    listed = consent_revocations.revoke(path, KEY, ISSUER, [TOKENS[2].grant.grant_id])
    assert listed.number == 2 and len(listed.revoked) == 2
    assert v.check(TOKENS[2], PEOPLE[2], **ASK) is None  # type: ignore[arg-type]  # looked at once a second
    clock.t += consent_revocations.RECHECK_S
    assert v.check(TOKENS[2], PEOPLE[2], **ASK) == "CONSENT_REVOKED"  # type: ignore[arg-type]


def test_an_older_list_or_a_shrunk_one_leaves_the_list_in_force(tmp_path: Path) -> None:
    path, clock = tmp_path / "revocations.json", Clock()
    first = consent_revocations.sign_list(KEY, ISSUER, 1, [TOKENS[1].grant.grant_id])
    path.write_bytes(consent_revocations.sign_list(KEY, ISSUER, 2, [TOKENS[1].grant.grant_id, bytes(16)]))
    watch = consent_revocations.RevocationWatch(path, ISSUER, public_raw(KEY), clock=clock)
    for older in (first, consent_revocations.sign_list(KEY, ISSUER, 3, [bytes(16)])):
        path.write_bytes(older)
        clock.t += 2
        assert watch.revoked(TOKENS[1].grant.grant_id) is True and watch.number == 2


def test_the_number_in_force_outlives_a_restart(tmp_path: Path) -> None:
    path, clock = tmp_path / "revocations.json", Clock()
    state_file = tmp_path / "state" / consent_revocations.STATE_FILE
    public = public_raw(KEY)
    first = consent_revocations.sign_list(KEY, ISSUER, 1, [])
    second = consent_revocations.sign_list(KEY, ISSUER, 2, [TOKENS[1].grant.grant_id])
    path.write_bytes(first)

    def start() -> consent_revocations.RevocationWatch:
        state = consent_revocations.RevocationState(state_file)
        return consent_revocations.RevocationWatch(path, ISSUER, public, clock=clock, state=state)

    watch = start()
    path.write_bytes(second)
    clock.t += 2
    assert watch.revoked(TOKENS[1].grant.grant_id) is True  # list 2 in force, and remembered
    path.write_bytes(first)
    with pytest.raises(ConfigError) as err:  # list 1 put back while the region was stopped
        start()
    assert err.value.code == "CONSENT_REVOCATIONS_ROLLBACK" and "list 1" in err.value.message
    path.write_bytes(consent_revocations.sign_list(KEY, ISSUER, 2, []))  # another list 2, without the revocation
    with pytest.raises(ConfigError) as err:
        start()
    assert err.value.code == "CONSENT_REVOCATIONS_CONFLICT"
    path.write_bytes(second)
    assert start().revoked(TOKENS[1].grant.grant_id) is True  # the newest list back: the region starts
    path.unlink()  # gone at startup, then put back older: refused, and every grant of the issuer with it
    watch = start()
    path.write_bytes(first)
    clock.t += 2
    assert watch.revoked(TOKENS[0].grant.grant_id) is None
    other = Ed25519PrivateKey.generate()  # an issuer published under a new key starts its lists afresh
    path.write_bytes(consent_revocations.sign_list(other, ISSUER, 1, []))
    state = consent_revocations.RevocationState(state_file)
    assert consent_revocations.RevocationWatch(path, ISSUER, public_raw(other), state=state).number == 1
    state_file.write_text("{not json")
    with pytest.raises(ConfigError) as err:
        consent_revocations.RevocationState(state_file)
    assert err.value.code == "CONSENT_REVOCATIONS_STATE_INVALID"


@pytest.mark.parametrize("damage", ["garbage", "other key", "other issuer", "unsorted", "gone"])
def test_an_unusable_list_refuses_every_grant_of_its_issuer(tmp_path: Path, damage: str) -> None:
    path, clock = tmp_path / "revocations.json", Clock()
    consent_revocations.revoke(path, KEY, ISSUER, [bytes(16)])
    watch = consent_revocations.RevocationWatch(path, ISSUER, public_raw(KEY), clock=clock)
    v = verifier(revocations={ISSUER: watch})
    assert v.check(TOKENS[0], PEOPLE[0], **ASK) is None  # type: ignore[arg-type]
    other = Ed25519PrivateKey.generate()
    if damage == "garbage":
        path.write_bytes(b"\x00not json")
    elif damage == "other key":
        path.write_bytes(consent_revocations.sign_list(other, ISSUER, 5, []))
    elif damage == "other issuer":
        path.write_bytes(consent_revocations.sign_list(KEY, "bj-consent", 5, []))
    elif damage == "unsorted":
        doc = path.read_text().replace('"number": 1', '"number": 7')
        path.write_text(doc)
    else:
        path.unlink()
    clock.t += 2
    assert v.check(TOKENS[0], PEOPLE[0], **ASK) == "CONSENT_REVOCATIONS_INVALID"  # type: ignore[arg-type]
    assert consent.refusal("CONSENT_REVOCATIONS_INVALID").status.name == "FAILED_PRECONDITION"


def test_merkle_root_from_inclusion_matches_verify() -> None:
    leaves = [merkle.leaf_hash(bytes([i])) for i in range(11)]
    head = merkle.root(leaves)
    for i in range(11):
        proof = merkle.inclusion_proof(leaves, i, 11)
        assert merkle.root_from_inclusion(leaves[i], i, 11, proof) == head
        assert merkle.root_from_inclusion(leaves[i], i, 11, [*proof, head]) is None
        assert merkle.root_from_inclusion(leaves[i], i, 11, [b"short"]) is None
