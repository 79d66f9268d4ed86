"""Consent tokens, revocations, refusals and policies attacked a second time, as a dishonest bank, a lying or
curious coordinator or a careless region would: each test asserts the secure behaviour, so it fails while the
attack succeeds."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hpf.federation.catalog import Catalog
from hpf.federation.consent import refusals as consent_refusals
from hpf.federation.consent import revocations as consent_revocations
from hpf.federation.consent import tokens as consent
from hpf.federation.consent.issuer import issue_batch, public_raw
from hpf.federation.consent.verifier import ConsentVerifier
from hpf.federation.crypto.sealing import OneTimeKey
from hpf.federation.errors import ConfigError, CryptoError, FederationError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.person_id import person_id_array
from hpf.node.consent_gate import consent_gate_for
from hpf.policies import DEFAULT_POLICY
from hpf.policies.engine import Asker, check_lookup
from hpf.policies.loader import load_policy

NOW = 1_767_225_600
DAY = 86_400
BANK = bytes(range(32))
ISSUER, THIRD = "shanghai-consent", "third-consent"  # the default policy's integrators accept ISSUER
KEYS = {ISSUER: Ed25519PrivateKey.generate(), THIRD: Ed25519PrivateKey.generate()}
LOANS = ["duplicate_loans", "loan_cities"]
TERMS = {"grantee": BANK, "purpose": "loan-review", "facts": LOANS}
PEOPLE: list[str] = person_id_array([310101] * 600, [19900101 + i % 28 for i in range(600)], range(600)).tolist()
QID = "ab" * 16


def _catalog() -> Catalog:
    return Catalog.model_validate(
        {
            "federation": "f",
            "nodes": [{"id": "n1", "address": "h:1"}],
            "tables": {"t": {"columns": {"x": {"type": "BIGINT"}}}},
            "issuers": [{"id": name, "key": base64.b64encode(public_raw(key)).decode()} for name, key in KEYS.items()],
        }
    )


# --- a curious coordinator ---------------------------------------------------------------------------------------


def test_the_sealed_tokens_do_not_tell_the_coordinator_which_issuer_granted_them_or_how_big_its_batch_was() -> None:
    """The coordinator relays ``sealed_consent`` and sees its length. A token's length is its issuer id's, its
    purpose's and its inclusion path's (the batch size): one applicant's screening tells the coordinator which
    centre's consent service recorded the consent (most likely the applicant's own city) and roughly how many
    people that centre granted the bank in the same batch. The identifiers are sealed at a fixed length; the
    tokens must be as well."""
    alone = issue_batch(KEYS[ISSUER], ISSUER, PEOPLE[:1], not_after=NOW + DAY, **TERMS)[0]  # type: ignore[arg-type]
    crowd = issue_batch(KEYS[THIRD], THIRD, PEOPLE, not_after=NOW + DAY, **TERMS)[0]  # type: ignore[arg-type]
    assert len(alone.encode()) != len(crowd.encode())  # the tokens themselves differ in length
    seen = {len(OneTimeKey().seal_consent([t.encode()], QID)) for t in (alone, crowd)}
    assert len(seen) == 1, f"the coordinator tells the two applicants' consents apart by length: {sorted(seen)}"


# --- a region that forgets revocations ---------------------------------------------------------------------------


def test_a_region_with_no_revocation_list_for_an_issuer_it_accepts_does_not_honour_a_revoked_grant(
    tmp_path: Path,
) -> None:
    """The person revoked their consent and the issuer signed the list; a region whose config names no list for
    that issuer (``consent_revocations`` left out, or an issuer newly added to the policy) still answers under the
    revoked token, and starts without a word. A region that cannot read a list refuses every grant of the issuer
    (CONSENT_REVOCATIONS_INVALID); one with no list at all must not be the weaker of the two."""
    catalog = _catalog()
    token = issue_batch(KEYS[ISSUER], ISSUER, PEOPLE[:1], not_after=2**40, **TERMS)[0]  # type: ignore[arg-type]
    consent_revocations.revoke(tmp_path / "revocations.json", KEYS[ISSUER], ISSUER, [token.grant.grant_id])
    lookups = load_policy(DEFAULT_POLICY).roles["integrator"].lookups
    assert lookups is not None and ISSUER in lookups.consent_issuers
    try:
        gate = consent_gate_for({}, catalog)  # the node's config names no consent_revocations
    except ConfigError:
        return  # refusing to start is secure too
    gate._grantee = lambda signer_der: BANK  # type: ignore[method-assign]
    with pytest.raises(FederationError) as err:
        gate.check(catalog, lookups, "rule", b"", "loan-review", PEOPLE[:1], [token], LOANS)
    assert err.value.code in ("CONSENT_REVOCATIONS_INVALID", "CONSENT_REVOKED")


# --- what held ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("purpose", ["Loan-Review", "LOAN-REVIEW", " loan-review", "loan-review ", "loan_review"])
def test_purpose_variants_are_neither_a_grant_nor_a_policy_purpose(purpose: str) -> None:
    token = issue_batch(KEYS[ISSUER], ISSUER, PEOPLE[:1], not_after=2**40, **TERMS)[0]  # type: ignore[arg-type]
    verifier = ConsentVerifier({ISSUER: public_raw(KEYS[ISSUER])}, now=lambda: NOW)
    assert verifier.check(token, PEOPLE[0], grantee=BANK, purpose=purpose, facts=LOANS) == "CONSENT_PURPOSE_MISMATCH"
    policy = load_policy(DEFAULT_POLICY)
    with pytest.raises(FederationError) as err:
        check_lookup(policy, Asker("bank", "integrator", "nanjing"), purpose, False, 1, False, party="n1", facts=LOANS)
    assert err.value.code.startswith("POLICY_PURPOSE_")
    if not consent.PURPOSE.fullmatch(purpose):  # no issuer signs a grant for a purpose no policy can name
        with pytest.raises(ValueError):
            issue_batch(KEYS[ISSUER], ISSUER, PEOPLE[:1], not_after=2**40, grantee=BANK, purpose=purpose, facts=LOANS)


def test_another_issuers_revocation_list_never_stands_for_this_issuers(tmp_path: Path) -> None:
    """A list signed by one issuer put in place of another's (or renamed to it) is unusable: the region refuses
    every grant of that issuer rather than reading the wrong list as "nothing revoked"."""
    catalog = _catalog()
    token = issue_batch(KEYS[ISSUER], ISSUER, PEOPLE[:1], not_after=2**40, **TERMS)[0]  # type: ignore[arg-type]
    path = tmp_path / "sh.json"
    consent_revocations.revoke(path, KEYS[THIRD], THIRD, [])  # third-consent's (empty) list, under ISSUER's path
    renamed = consent_revocations.sign_list(KEYS[THIRD], ISSUER, 9, [])  # renamed, signed by the wrong key
    lookups = load_policy(DEFAULT_POLICY).roles["integrator"].lookups
    for data in (path.read_bytes(), renamed):
        path.write_bytes(data)
        gate = consent_gate_for({ISSUER: path}, catalog, tmp_path / f"state-{len(data)}.json")
        gate._grantee = lambda signer_der: BANK  # type: ignore[method-assign]
        with pytest.raises(FederationError) as err:
            gate.check(catalog, lookups, "rule", b"", "loan-review", PEOPLE[:1], [token], LOANS)  # type: ignore[arg-type]
        assert err.value.code == "CONSENT_REVOCATIONS_INVALID"


def test_a_refusal_re_encoded_by_the_coordinator_withholds_only_what_the_region_signed() -> None:
    """Protobuf wire tricks on a signed refusal: extra places appended (repeated fields concatenate), an unknown
    field, or a second node_id (last one wins) all break the region's signature; nobody is withheld."""
    key = Ed25519PrivateKey.generate()
    public = base64.b64encode(key.public_key().public_bytes_raw()).decode()
    signed = consent_refusals.sign("n1", QID, 5, [(3, "CONSENT_REVOKED")], key.sign)
    keys = {"n1": public, "n2": public}
    ok = consent_refusals.withheld_places(signed, query_id=QID, people=5, regions=["n1", "n2"], audit_keys=keys)
    assert ok == {2: "CONSENT_REVOKED"}
    extra_place = pb.ConsentRefusal(places=[1], codes=["CONSENT_REVOKED"]).SerializeToString()
    unknown = b"\xf8\x01\x01"  # field 31, varint 1
    other_node = pb.ConsentRefusal(node_id="n2").SerializeToString()
    for forged in (signed + extra_place, signed + unknown, signed + other_node):
        with pytest.raises(CryptoError) as err:
            consent_refusals.withheld_places(forged, query_id=QID, people=5, regions=["n1", "n2"], audit_keys=keys)
        assert err.value.code == "ANSWER_STATEMENT_INVALID"


def test_a_gate_never_names_more_places_than_a_refusal_carries(tmp_path: Path) -> None:
    """A region refusing many applicants names the first and at most MAX_NAMED more, and signs exactly those."""
    from hpf.node.consent_gate import MAX_NAMED

    token = issue_batch(KEYS[ISSUER], ISSUER, PEOPLE[:1], not_after=2**40, **TERMS)[0]  # type: ignore[arg-type]
    catalog = _catalog()
    consent_revocations.revoke(tmp_path / "revocations.json", KEYS[ISSUER], ISSUER, [])  # nothing revoked
    gate = consent_gate_for({ISSUER: tmp_path / "revocations.json"}, catalog)
    gate._grantee = lambda signer_der: BANK  # type: ignore[method-assign]
    lookups = load_policy(DEFAULT_POLICY).roles["integrator"].lookups
    signed: list[int] = []
    with pytest.raises(FederationError):
        gate.check(
            catalog,
            lookups,  # type: ignore[arg-type]
            "rule",
            b"",
            "loan-review",
            PEOPLE[:100],
            [token] * 100,  # the first person's token for everyone: 99 refused
            LOANS,
            lambda refused, n: signed.extend(p for p, _ in refused) or b"",  # type: ignore[func-returns-value]
        )
    assert len(signed) == 1 + MAX_NAMED and signed[0] == 2


def test_a_refusal_naming_more_places_than_a_gate_ever_signs_is_not_taken() -> None:
    """A region's gate names the first refused applicant and at most MAX_NAMED more, so a rogue region can withhold
    at most (1 + MAX_NAMED) x (1 + MAX_WITHHOLD_RETRIES) applicants of a batch before the screening fails and its
    refusals show. The client takes a signed refusal naming every place of a 4,550-applicant batch at once: the
    whole batch withheld in one round, with no retry left to make it show."""
    from hpf.client.screening import MAX_WITHHOLD_RETRIES
    from hpf.node.consent_gate import MAX_NAMED

    key = Ed25519PrivateKey.generate()
    keys = {"n1": base64.b64encode(key.public_key().public_bytes_raw()).decode()}
    people = 4_550
    everyone = consent_refusals.sign(
        "n1", QID, people, [(p, "CONSENT_REVOKED") for p in range(1, people + 1)], key.sign
    )
    assert (1 + MAX_NAMED) * (1 + MAX_WITHHOLD_RETRIES) < people
    with pytest.raises(CryptoError):
        consent_refusals.withheld_places(everyone, query_id=QID, people=people, regions=["n1"], audit_keys=keys)
