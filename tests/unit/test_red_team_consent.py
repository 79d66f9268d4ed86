"""Consent tokens, facts per request and withholding, attacked as a dishonest bank, a lying coordinator or a curious
region would: each test fails if the attack succeeds."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from lying_coordinator import rewritten_refusal

from hpf.client.lookups import ConsentRefused
from hpf.federation.consent import refusals as consent_refusals
from hpf.federation.consent import tokens as consent
from hpf.federation.consent.issuer import issue_batch, public_raw
from hpf.federation.consent.verifier import ConsentVerifier
from hpf.federation.crypto import lookup_codec
from hpf.federation.errors import CryptoError, FederationError, PlanError, PolicyViolation
from hpf.federation.person_id import person_id_array
from hpf.node.consent_gate import ConsentGate
from hpf.policies import DEFAULT_POLICY
from hpf.policies.engine import Asker, check_lookup
from hpf.policies.loader import load_policy

NOW = 1_767_225_600
DAY = 86_400
BANK = bytes(range(32))
ISSUER = "sh-consent"
PEOPLE = list(person_id_array([310101] * 5, [19900101 + i for i in range(5)], [11] * 5))
TERMS = {"grantee": BANK, "purpose": "loan-review", "facts": ["duplicate_loans", "loan_cities"]}
ASK = {"grantee": BANK, "purpose": "loan-review", "facts": ["duplicate_loans"]}
KEY = Ed25519PrivateKey.generate()
TOKENS = issue_batch(KEY, ISSUER, PEOPLE, not_after=NOW + 30 * DAY, **TERMS)  # type: ignore[arg-type]


def verifier() -> ConsentVerifier:
    return ConsentVerifier({ISSUER: public_raw(KEY)}, now=lambda: NOW)


# --- forged and altered tokens ----------------------------------------------------------------------------------


def test_a_forged_token_sent_first_does_not_poison_the_batch_for_honest_ones() -> None:
    """A bank sends a token of a real batch with an altered grant first (the verifier caches the batch as
    invalid under a wrong root): the honest tokens of that batch are still accepted, the forgery still refused,
    before and after the batch is proven."""
    v = verifier()
    forged = dataclasses.replace(TOKENS[0], grant=dataclasses.replace(TOKENS[0].grant, facts=0b111111))
    assert v.check(forged, PEOPLE[0], **ASK) == "CONSENT_SIGNATURE_INVALID"  # type: ignore[arg-type]
    for token, person in zip(TOKENS, PEOPLE, strict=True):
        assert v.check(token, person, **ASK) is None  # type: ignore[arg-type]
    assert v.check(forged, PEOPLE[0], **ASK) == "CONSENT_SIGNATURE_INVALID"  # type: ignore[arg-type]
    balance = {**ASK, "facts": ["balance"]}
    assert v.check(forged, PEOPLE[0], **balance) == "CONSENT_SIGNATURE_INVALID"  # type: ignore[arg-type]


def test_a_forged_token_sent_first_costs_the_honest_ones_no_signature_check_each() -> None:
    """The forgery caches the batch as invalid under its forged root; the honest tokens after it must not each pay
    an Ed25519 verification (5,000 a request, per region) because of it."""
    v = verifier()
    real, calls = v._keys[ISSUER], []

    class Counted:
        def verify(self, signature: bytes, data: bytes) -> None:
            calls.append(1)
            real.verify(signature, data)

    v._keys[ISSUER] = Counted()  # type: ignore[assignment]
    forged = dataclasses.replace(TOKENS[0], grant=dataclasses.replace(TOKENS[0].grant, purpose="marketing"))
    assert v.check(forged, PEOPLE[0], **ASK) == "CONSENT_SIGNATURE_INVALID"  # type: ignore[arg-type]
    for _ in range(3):
        for token, person in zip(TOKENS, PEOPLE, strict=True):
            assert v.check(token, person, **ASK) is None  # type: ignore[arg-type]
    assert v.check(forged, PEOPLE[0], **ASK) == "CONSENT_SIGNATURE_INVALID"  # type: ignore[arg-type]
    assert len(calls) <= 3


def test_a_leaf_moved_to_another_index_or_batch_size_is_refused_or_harmless() -> None:
    """Another index or batch size under the same signature: either refused, or still exactly the signed grant."""
    v = verifier()
    assert v.check(TOKENS[1], PEOPLE[1], **ASK) is None  # type: ignore[arg-type]
    for index, size in ((0, 5), (2, 5), (1, 6), (1, 4), (1, 2)):
        moved = dataclasses.replace(TOKENS[1], index=index, batch_size=size)
        assert v.check(moved, PEOPLE[1], **ASK) == "CONSENT_SIGNATURE_INVALID"  # type: ignore[arg-type]


def test_a_root_signed_by_another_issuer_under_this_issuer_name_is_forged() -> None:
    rogue = Ed25519PrivateKey.generate()
    tokens = issue_batch(rogue, ISSUER, PEOPLE[:2], not_after=NOW + DAY, **TERMS)  # type: ignore[arg-type]
    assert verifier().check(tokens[0], PEOPLE[0], **ASK) == "CONSENT_SIGNATURE_INVALID"  # type: ignore[arg-type]


def test_a_batch_with_the_same_person_twice_binds_each_token_to_that_person_only() -> None:
    tokens = issue_batch(KEY, ISSUER, [PEOPLE[0], PEOPLE[0]], not_after=NOW + DAY, **TERMS)  # type: ignore[arg-type]
    v = verifier()
    for token in tokens:
        assert v.check(token, PEOPLE[0], **ASK) is None  # type: ignore[arg-type]
        assert v.check(token, PEOPLE[1], **ASK) == "CONSENT_PERSON_MISMATCH"  # type: ignore[arg-type]
    # the two leaves differ (grant id and salt), so revoking one does not revoke the other, and neither is the other
    assert tokens[0].grant.grant_id != tokens[1].grant.grant_id and tokens[0].grant.leaf() != tokens[1].grant.leaf()


def test_no_facts_asked_is_not_every_fact_for_a_verifier() -> None:
    """A request naming no facts means every fact (LookupSpec.facts): a node resolves it before the consent check,
    so a grant for loan facts never covers it."""
    facts = lookup_codec.facts_asked([])
    assert verifier().check(TOKENS[0], PEOPLE[0], grantee=BANK, purpose="loan-review", facts=facts) == (
        "CONSENT_FACTS_NOT_GRANTED"
    )
    for bad in (["balance", "balance"], ["balance", "nope"], ["duplicate_loans"] * 7, ["Balance"]):
        with pytest.raises(PlanError) as err:
            lookup_codec.facts_asked(bad)
        assert err.value.code == "LOOKUP_MALFORMED"


def _certificate(public_key: object, name: str = "bank") -> x509.Certificate:
    issuer_key = generate_private_key(SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(issuer_key, hashes.SHA256())
    )


def test_a_certificate_reissued_under_the_same_name_with_another_key_is_another_grantee() -> None:
    held = generate_private_key(SECP256R1()).public_key()
    first, renewed = _certificate(held), _certificate(held)  # the same key re-certified: the same grantee
    other = _certificate(generate_private_key(SECP256R1()).public_key())  # same name, another key
    assert consent.grantee_of(first) == consent.grantee_of(renewed)
    assert consent.grantee_of(first) != consent.grantee_of(other)
    tokens = issue_batch(  # type: ignore[arg-type]
        KEY, ISSUER, PEOPLE[:1], grantee=consent.grantee_of(first), purpose="loan-review",
        facts=["duplicate_loans"], not_after=NOW + DAY,
    )  # fmt: skip
    v = verifier()
    ask = {"purpose": "loan-review", "facts": ["duplicate_loans"]}
    assert v.check(tokens[0], PEOPLE[0], grantee=consent.grantee_of(renewed), **ask) is None  # type: ignore[arg-type]
    assert v.check(tokens[0], PEOPLE[0], grantee=consent.grantee_of(other), **ask) == (  # type: ignore[arg-type]
        "CONSENT_GRANTEE_MISMATCH"
    )


# --- facts a bank receives ----------------------------------------------------------------------------------------


def test_a_bank_asking_for_loan_facts_learns_nothing_of_a_balance_out_of_range() -> None:
    """The region's facts row marks a person whose balance (or contributions, or amount outstanding) does not fit
    the layout as failed. A bank asking only for duplicate_loans/loan_cities must not learn that bit: it is a fact
    about a balance it may never receive."""
    bank = ("duplicate_loans", "loan_cities")
    columns = lookup_codec.FACT_COLUMNS
    honest = dict.fromkeys(columns, 0) | {"cities": 1, "cities_active": 1, "loan_cities": 1, "active_loans": 1}
    for money, bit in (("contribution_fen", 1), ("balance_fen", 2), ("outstanding_fen", 4)):
        huge = honest | {"failed": bit}  # the region sends an out-of-range sum as 0, with its failure bit
        rows = np.array([[honest[c] for c in columns], [huge[c] for c in columns]], dtype=np.int64)
        slots = lookup_codec.encode_facts(rows, cells=1, cell=0, facts=bank)
        got = lookup_codec.decode_facts(slots, subjects=2, cells=1, facts=bank)
        assert got[0][0] == got[1][0], money
        assert got[1][0].failed_regions == 0 and got[1][0].loan_cities == 1
        # asked for the fact whose sum did not fit, the failure shows (no wrong figure is ever shown)
        owner = {"contribution_fen": "contributions", "balance_fen": "balance", "outstanding_fen": "loans"}[money]
        slots = lookup_codec.encode_facts(rows, cells=1, cell=0, facts=(owner,))
        assert lookup_codec.decode_facts(slots, subjects=2, cells=1, facts=(owner,))[1][0].failed_regions == 1


# --- the default policy ---------------------------------------------------------------------------------------------


def _bank() -> Asker:
    return Asker(name="bank", role="integrator", region="nanjing")


def test_the_default_policy_never_gives_a_bank_balances_or_every_fact() -> None:
    policy = load_policy(DEFAULT_POLICY)
    for facts in (lookup_codec.facts_asked([]), ("balance",), ("duplicate_loans", "contributions"), ("accounts",)):
        with pytest.raises(PolicyViolation) as err:
            check_lookup(policy, _bank(), "loan-review", True, 10, False, party="shanghai", facts=facts)
        assert err.value.code == "POLICY_FACTS_NOT_ALLOWED"


def test_the_default_policy_takes_no_free_text_consent_for_a_banks_screening() -> None:
    policy = load_policy(DEFAULT_POLICY)
    lookups = policy.roles["integrator"].lookups
    assert lookups is not None
    check_lookup(policy, _bank(), "loan-review", True, 5000, False, party="shanghai", facts=lookup_codec.FACTS[:2])
    with pytest.raises(FederationError):  # no token at all: a free-text reference must not be enough
        ConsentGate().check(None, lookups, "rule", b"", "loan-review", PEOPLE, None, lookup_codec.FACTS[:2])  # type: ignore[arg-type]


# --- the client's retry loop, fed by a lying coordinator --------------------------------------------------------


REGION_KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
AUDIT_KEYS = {
    "hangzhou": base64.b64encode(REGION_KEY.public_key().public_bytes_raw()).decode(),
    "nanjing": base64.b64encode(OTHER_KEY.public_key().public_bytes_raw()).decode(),
}
QID = "ab" * 32


def _refusal(**change: object) -> bytes:
    """hangzhou's signed refusal of applicants 2 and 5 of a request of 10, with ``change`` made after signing (or,
    for ``key``/``node``/``query``, signed so)."""
    key = change.pop("key", REGION_KEY)
    node = change.pop("node", "hangzhou")
    qid = change.pop("query", QID)
    refused = change.pop("refused", [(2, "CONSENT_REVOKED"), (5, "CONSENT_EXPIRED")])
    people = change.pop("people", 10)
    signed = consent_refusals.sign(node, qid, people, refused, key.sign)  # type: ignore[arg-type, attr-defined]
    return rewritten_refusal(signed, **change)


def _withheld(evidence: bytes, people: int = 10) -> dict[int, str]:
    return consent_refusals.withheld_places(
        evidence, query_id=QID, people=people, regions=["hangzhou", "nanjing"], audit_keys=AUDIT_KEYS
    )


def test_a_region_signed_refusal_names_exactly_its_places() -> None:
    assert _withheld(_refusal()) == {1: "CONSENT_REVOKED", 4: "CONSENT_EXPIRED"}


@pytest.mark.parametrize(
    "forged",
    [
        pytest.param(b"", id="none"),
        pytest.param(b"\x0a\xff\xff\xff", id="garbage"),
        pytest.param(_refusal(signature=b""), id="unsigned"),
        pytest.param(_refusal(signature=b"\0" * 64), id="zero-signature"),
        pytest.param(_refusal(places=[3, 5]), id="re-pointed"),
        pytest.param(_refusal(codes=["CONSENT_EXPIRED", "CONSENT_EXPIRED"]), id="re-coded"),
        pytest.param(_refusal(key=OTHER_KEY), id="another-region-key"),
        pytest.param(_refusal(node="nanjing"), id="claims-another-region"),
        pytest.param(_refusal(node="suzhou", key=OTHER_KEY), id="region-not-asked"),
        pytest.param(_refusal(query="cd" * 32), id="another-request"),
        pytest.param(_refusal(people=11), id="another-size"),
        pytest.param(_refusal(refused=[(11, "CONSENT_REVOKED")], people=10), id="place-past-the-end"),
        pytest.param(_refusal(refused=[(0, "CONSENT_REVOKED")]), id="place-zero"),
        pytest.param(_refusal(refused=[(2, "CONSENT_REVOKED"), (2, "CONSENT_EXPIRED")]), id="place-twice"),
        pytest.param(_refusal(refused=[]), id="nobody"),
        pytest.param(_refusal(refused=[(2, "POLICY_FACTS_NOT_ALLOWED")]), id="not-a-consent-code"),
        pytest.param(_refusal(codes=["CONSENT_REVOKED"]), id="codes-short"),
    ],
)
def test_a_refusal_not_signed_by_an_asked_region_for_this_request_withholds_nobody(forged: bytes) -> None:
    with pytest.raises(CryptoError) as err:
        _withheld(forged)
    assert err.value.code == "ANSWER_STATEMENT_INVALID"


def test_a_region_signed_word_that_it_cannot_read_a_revocation_list_stands_and_withholds_nobody() -> None:
    with pytest.raises(FederationError) as err:
        _withheld(_refusal(refused=[(2, "CONSENT_REVOKED"), (3, "CONSENT_REVOCATIONS_INVALID")]))
    assert err.value.code == "CONSENT_REVOCATIONS_INVALID" and "hangzhou" in err.value.message


def test_a_region_without_a_key_in_the_pinned_catalog_cannot_have_its_refusal_checked() -> None:
    with pytest.raises(CryptoError) as err:
        consent_refusals.withheld_places(
            _refusal(), query_id=QID, people=10, regions=["hangzhou"], audit_keys={"hangzhou": None}
        )
    assert err.value.code == "ANSWER_STATEMENT_UNVERIFIABLE"


def test_the_gate_signs_exactly_the_places_and_codes_its_message_names() -> None:
    """The node's gate: the refusal's text and its signed places agree, first and up to MAX_NAMED more."""
    from hpf.node.consent_gate import MAX_NAMED

    v = verifier()
    people = [PEOPLE[0], *person_id_array([310101] * 39, [19800101 + i for i in range(39)], [11] * 39)]
    signed: list[tuple[list[tuple[int, str]], int]] = []
    gate = ConsentGate()
    gate._verifier = lambda catalog, issuers: v  # type: ignore[method-assign]
    gate._grantee = lambda signer_der: BANK  # type: ignore[method-assign]
    lookups = load_policy(DEFAULT_POLICY).roles["integrator"].lookups
    with pytest.raises(PolicyViolation) as err:
        gate.check(
            None,  # type: ignore[arg-type]
            lookups,  # type: ignore[arg-type]
            "rule",
            b"",
            "loan-review",
            people,
            [TOKENS[0]] * 40,
            ["duplicate_loans"],
            lambda refused, n: signed.append((list(refused), n)) or b"signed",  # type: ignore[func-returns-value]
        )
    assert err.value.consent_refusal == b"signed"
    ((refused, n),) = signed
    assert n == 40 and len(refused) == 1 + MAX_NAMED  # TOKENS[0] is only people[0]'s: the rest are refused
    assert [p for p, _ in refused] == list(range(2, 2 + 1 + MAX_NAMED))
    assert err.value.message.startswith("applicant 2 of 40: ")


def test_a_region_marks_each_sum_that_does_not_fit_by_its_own_bit() -> None:
    """The region's facts query: one failure bit per money sum, so only the facts asked for can show one."""
    import duckdb

    from hpf.node.lookup_index import FACTS_SQL

    big = lookup_codec.MONEY_MAX
    db = duckdb.connect()
    db.execute("CREATE TABLE accounts (person_id VARCHAR, status VARCHAR, balance_fen BIGINT)")
    db.execute("CREATE TABLE deposits (person_id VARCHAR, amount_fen BIGINT)")
    db.execute("CREATE TABLE loans (person_id VARCHAR, status VARCHAR, outstanding_fen BIGINT)")
    rich, fine = PEOPLE[0], PEOPLE[1]
    db.execute(
        "INSERT INTO accounts VALUES (?, 'active', ?), (?, 'active', ?), (?, 'active', 5)", [rich, big, rich, big, fine]
    )
    db.execute("INSERT INTO loans VALUES (?, 'active', 7), (?, 'active', 7)", [rich, fine])
    rows = {r[0]: r for r in db.execute(FACTS_SQL).fetchall()}
    failed = ["pid", *lookup_codec.FACT_COLUMNS].index("failed")
    assert rows[rich][failed] == lookup_codec.FAILED_BITS["balance_fen"] and rows[fine][failed] == 0


class _RefusingRegion:
    """A client's ``_ask`` behind a rogue region that refuses, signed, applicants of its own choosing every time
    (a region's refusal of its own cannot be prevented; how often the client asks again can be bounded)."""

    def __init__(self, name: str) -> None:
        self.name, self.sent = name, list[list[str]]()

    def _ask(self, ids: list[str], *args: object) -> object:
        self.sent.append(list(ids))
        n = len(ids)
        refusal = PolicyViolation("a region refused", code="CONSENT_REVOKED")
        if self.name == "all":
            raise ConsentRefused(refusal, dict.fromkeys(range(n), "CONSENT_REVOKED"))
        raise ConsentRefused(refusal, {n - 1: "CONSENT_REVOKED"})  # one more each time


@pytest.mark.parametrize("how", ["all", "one-at-a-time"])
def test_forged_refusals_bound_the_requests_and_never_resend_a_withheld_applicant(how: str) -> None:
    """A region refusing more applicants at every request: the client withholds whom it names, never asks about
    them again, and sends at most MAX_WITHHOLD_RETRIES + 1 requests per batch."""
    from hpf.client.federation_client import FederationClient
    from hpf.client.screening import MAX_WITHHOLD_RETRIES

    liar = _RefusingRegion(how)
    ids = list(person_id_array([310101] * 20, [19900101 + i for i in range(20)], [11] * 20))
    tokens = [b"t"] * len(ids)
    ask = FederationClient._ask_withholding
    if how == "all":
        answer, refused = ask(liar, ids, [], {}, None, None, tokens, ("loan_cities",))  # type: ignore[arg-type]
        assert answer is None and set(refused) == set(ids) and len(liar.sent) == 1
    else:
        with pytest.raises(FederationError):  # past the bound, the refusal stands
            ask(liar, ids, [], {}, None, None, tokens, ("loan_cities",))  # type: ignore[arg-type]
        assert len(liar.sent) == MAX_WITHHOLD_RETRIES + 1
    withheld: set[str] = set()
    for sent in liar.sent:
        assert not withheld & set(sent)  # a withheld applicant is never asked about again
        withheld |= {sent[-1]}
