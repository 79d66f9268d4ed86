"""Withholding against a lying coordinator, and facts beyond a grant, end to end.

Here every region takes consent tokens for a bank's loan review and gives only federation-wide totals (no
per-city answer: the default for integrators); hangzhou does not accept the issuer ``third-consent``. A coordinator
that passes hangzhou's consent refusal off as a region gone missing re-runs the lookup with the survivors: they
must refuse to answer without hangzhou, so no figure about the applicant hangzhou refused reaches the bank.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import harness
import pytest
import yaml
from coordinator_recorder import CoordinatorRecorder, recording
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import coordinator.fanout
from federation import consent, pki
from federation.errors import FederationError
from federation.hpf_schema import hpf_tables
from federation.synth import generate_node
from policies import DEFAULT_POLICY

NODES = ["shanghai", "hangzhou", "nanjing"]
PEOPLE = (("bank", "integrator", "nanjing"),)
ISSUER, THIRD = "sh-consent", "third-consent"
KEYS = {ISSUER: Ed25519PrivateKey.generate(), THIRD: Ed25519PrivateKey.generate()}
REVIEW = {"purpose": "loan-review"}
LOANS = ["duplicate_loans", "loan_cities"]
RECORDED: dict[str, CoordinatorRecorder] = {}


def _policy(root: Path, issuers: Sequence[str]) -> Path:
    path = root / f"policy-{len(issuers)}.yaml"
    lookups = {"consent": "token", "consent_issuers": list(issuers)}
    doc = {
        "version": 1,
        "extends": str(DEFAULT_POLICY),
        "secure_aggregation": {"min_participants": 2},
        "roles": {"integrator": {"lookups": lookups}},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    root = tmp_path_factory.mktemp("red-consent")
    for node in NODES:
        generate_node(root / "data", node, 2_000, 17)
    both, one = _policy(root, [ISSUER, THIRD]), _policy(root, [ISSUER])
    issuers = [{"id": i, "key": base64.b64encode(consent.public_raw(k)).decode()} for i, k in KEYS.items()]
    with (
        pytest.MonkeyPatch.context() as patch,
        recording(patch) as recorder,
        harness.federation(
            root,
            hpf_tables(),
            {n: {} for n in NODES},
            write_data=False,
            policy={n: one if n == "hangzhou" else both for n in NODES},
            people=PEOPLE,
            catalog_extra={"issuers": issuers},
        ) as f,
    ):
        RECORDED["recorder"] = recorder
        yield f


def people(fed: harness.Federation, n: int) -> list[str]:
    rows = fed.oracle("SELECT DISTINCT person_id FROM loans WHERE status = 'active' ORDER BY person_id")
    return [r[0] for r in rows[:n]]


def tokens(fed: harness.Federation, ids: Sequence[str], issuer: str, facts: Sequence[str] = LOANS) -> list[str]:
    grantee = consent.grantee_of(pki.load_certificate((fed.pki_dir / "people" / "bank.pem").read_bytes()))
    granted = consent.issue_batch(
        KEYS[issuer],
        issuer,
        ids,
        grantee=grantee,
        purpose="loan-review",
        facts=facts,
        not_after=int(time.time() + 86_400),
    )
    return [consent.token_text(t) for t in granted]


def test_a_coordinator_passing_a_consent_refusal_off_as_missing_gets_no_answer_from_the_others(
    fed: harness.Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = people(fed, 3)
    given = [*tokens(fed, ids[:2], ISSUER), *tokens(fed, ids[2:], THIRD)]  # hangzhou refuses the third
    recorder = RECORDED["recorder"]
    heads_before = len(recorder.heads)
    lying = tuple(p for p in coordinator.fanout.QUERY_FAILURE_PREFIXES if p != "CONSENT_")
    monkeypatch.setattr(coordinator.fanout, "QUERY_FAILURE_PREFIXES", lying)
    with fed.client(person="bank") as bank, pytest.raises(FederationError) as err:
        bank.lookup(ids, tokens=given, **REVIEW)  # type: ignore[arg-type]
    # the survivors refuse a run without hangzhou; the bank has no answer at all
    assert err.value.code == "LOOKUP_REGION_MISSING" and "POLICY_BREAKDOWN_DENIED" in err.value.message
    assert len(recorder.heads) == heads_before
    with fed.client(person="bank") as bank, pytest.raises(FederationError) as err:
        bank.screen(ids, tokens=given, **REVIEW)  # type: ignore[arg-type]
    assert len(recorder.heads) == heads_before
    monkeypatch.undo()
    with fed.client(person="bank") as bank:  # the honest coordinator: the third withheld, the others answered
        screened = bank.screen(ids, tokens=given, **REVIEW)  # type: ignore[arg-type]
    assert screened.withheld == {2: "CONSENT_ISSUER_UNKNOWN"} and screened.complete


def test_a_bank_gets_no_fact_beyond_its_policy_even_with_a_grant_for_it(fed: harness.Federation) -> None:
    """A person granted the bank every fact: the regions' policy still never gives a bank balances."""
    ids = people(fed, 2)
    given = tokens(fed, ids, ISSUER, facts=consent.FACTS)
    with fed.client(person="bank") as bank:
        for facts in (["balance"], [*LOANS, "balance"], list(consent.FACTS)):
            with pytest.raises(FederationError) as err:
                bank.lookup(ids, tokens=given, facts=facts, **REVIEW)  # type: ignore[arg-type]
            assert err.value.code == "POLICY_FACTS_NOT_ALLOWED"
        answer = bank.lookup(ids, tokens=given, **REVIEW)  # type: ignore[arg-type]
    assert all(f.balance_fen is None and f.contribution_fen is None for f in answer.facts)


def test_a_bank_leaving_the_refusing_region_out_of_its_own_request_is_refused(
    fed: harness.Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bank signs a lookup to the regions that accept its tokens only: they refuse (federation-wide only)."""
    from federation.client import FederationClient

    ids = people(fed, 2)
    given = tokens(fed, ids, THIRD)
    monkeypatch.setattr(FederationClient, "lookup_regions", lambda self, exclude_home=False: ["shanghai", "nanjing"])
    with fed.client(person="bank") as bank, pytest.raises(FederationError) as err:
        bank.lookup(ids, tokens=given, **REVIEW)  # type: ignore[arg-type]
    assert err.value.code == "POLICY_BREAKDOWN_DENIED"


def test_no_identifier_or_token_in_any_region_audit_entry_or_log(
    fed: harness.Federation, caplog: pytest.LogCaptureFixture
) -> None:
    ids = people(fed, 3)
    given = [*tokens(fed, ids[:2], ISSUER), *tokens(fed, ids[2:], THIRD)]
    with caplog.at_level("DEBUG"), fed.client(person="bank") as bank:
        bank.screen(ids, tokens=given, **REVIEW)  # type: ignore[arg-type]
        with pytest.raises(FederationError):
            bank.lookup(ids, tokens=given, **REVIEW)  # type: ignore[arg-type]
    secrets = [*ids, *(t[:24] for t in given), *(t[-24:] for t in given)]
    for node in NODES:
        text = (fed.audit_dir(node) / "entries.jsonl").read_text()
        assert not [s for s in secrets if s in text], node
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not [s for s in secrets if s in logged]
