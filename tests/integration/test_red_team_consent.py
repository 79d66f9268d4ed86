"""Withholding against a lying coordinator, and facts beyond a grant, end to end.

Here every region takes consent tokens for a bank's loan review and gives only federation-wide totals (no
per-city answer: the default for integrators); hangzhou does not accept the issuer ``third-consent``. A coordinator
that passes hangzhou's consent refusal off as a region gone missing re-runs the lookup with the survivors: they
must refuse to answer without hangzhou, so no figure about the applicant hangzhou refused reaches the bank.
"""

from __future__ import annotations

from collections.abc import Iterator

import harness
import pytest
from consent_federation import ISSUER, LOANS, NODES, THIRD, issuer_federation, people, tokens
from coordinator_recorder import CoordinatorRecorder

import coordinator.fanout
from federation import consent
from federation.errors import FederationError

REVIEW = {"purpose": "loan-review"}
RECORDED: dict[str, CoordinatorRecorder] = {}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    with issuer_federation(tmp_path_factory.mktemp("red-consent"), 17, ()) as (f, recorder):
        RECORDED["recorder"] = recorder
        yield f


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
