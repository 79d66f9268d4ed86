"""Withholding against a lying coordinator, and facts beyond a grant, end to end.

Here every region takes consent tokens for a bank's loan review and gives only federation-wide totals (no
per-city answer: the default for integrators); hangzhou does not accept the issuer ``third-consent``. A coordinator
that passes hangzhou's consent refusal off as a region gone missing re-runs the lookup with the survivors: they
must refuse to answer without hangzhou, so no figure about the applicant hangzhou refused reaches the bank. A
coordinator that makes up a consent refusal, alters or replays a region's, or strips its signature, gets no
applicant withheld: the client withholds only on a region's signed word for that very request.
"""

from __future__ import annotations

from collections.abc import Iterator

import harness
import pytest
from consent_federation import ISSUER, LOANS, NODES, THIRD, issuer_federation, people, tokens
from coordinator_recorder import CoordinatorRecorder
from lying_coordinator import rewritten_refusal

import hpf.coordinator.fanout
from hpf.coordinator.fanout import FanOut
from hpf.coordinator.outcome import MissingRegion
from hpf.federation.consent import tokens as consent
from hpf.federation.errors import FederationError, error_for_code
from hpf.federation.generated import hpf_federation_pb2 as pb

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
    lying = frozenset(c for c in hpf.coordinator.fanout.QUERY_FAILURES if not c.startswith("CONSENT_"))
    monkeypatch.setattr(hpf.coordinator.fanout, "QUERY_FAILURES", lying)
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
    from hpf.client.federation_client import FederationClient

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


def _real_refusal(fed: harness.Federation, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str], bytes]:
    """Three applicants, hangzhou refusing the third (its issuer), and hangzhou's signed refusal of a lookup of
    them, as the coordinator received it."""
    ids = people(fed, 3)
    given = [*tokens(fed, ids[:2], ISSUER), *tokens(fed, ids[2:], THIRD)]
    seen: list[MissingRegion] = []
    honest = hpf.coordinator.fanout._missing

    def keep(node_id: str, err: object) -> MissingRegion:
        seen.append(honest(node_id, err))  # type: ignore[arg-type]
        return seen[-1]

    with monkeypatch.context() as patch:
        patch.setattr(hpf.coordinator.fanout, "_missing", keep)
        with fed.client(person="bank") as bank, pytest.raises(FederationError) as err:
            bank.lookup(ids, tokens=given, **REVIEW)  # type: ignore[arg-type]
    assert err.value.code == "CONSENT_ISSUER_UNKNOWN"
    (refusal,) = [m.consent_refusal for m in seen if m.node_id == "hangzhou"]
    signed = pb.ConsentRefusal.FromString(refusal)
    assert (signed.node_id, signed.people, list(signed.places)) == ("hangzhou", 3, [3])
    return ids, given, refusal


def _forging(monkeypatch: pytest.MonkeyPatch, code: str, message: str, refusal: bytes) -> None:
    """The coordinator refuses every lookup itself, with ``code`` and ``message``, carrying ``refusal``."""

    async def forge(self: FanOut, *args: object, **kwargs: object) -> object:
        error = error_for_code(code, message, None, "hangzhou: roles.integrator.lookups.consent")
        error.consent_refusal = refusal
        raise error

    monkeypatch.setattr(FanOut, "lookup", forge)


@pytest.mark.parametrize("forgery", ["made-up", "unsigned", "garbage", "replayed", "other-place", "other-code"])
def test_a_coordinator_cannot_make_the_client_withhold_an_applicant_no_region_refused(
    fed: harness.Federation, monkeypatch: pytest.MonkeyPatch, forgery: str
) -> None:
    """Every way a coordinator can name applicants refused without a region's signature for that request: the
    screening fails as the coordinator's misbehaving (ANSWER_STATEMENT_INVALID), withholding nobody."""
    ids, given, refusal = _real_refusal(fed, monkeypatch)
    honest = tokens(fed, ids, ISSUER)  # no region refuses these
    evidence = {
        "made-up": b"",
        "unsigned": rewritten_refusal(refusal, signature=b""),
        "garbage": b"\x0a\xff\xff",
        "replayed": refusal,  # hangzhou's real refusal, of an earlier request
        "other-place": rewritten_refusal(refusal, places=[1]),  # re-pointed at an honest applicant, signature kept
        "other-code": rewritten_refusal(refusal, codes=["CONSENT_REVOKED"]),
    }[forgery]
    _forging(monkeypatch, "CONSENT_ISSUER_UNKNOWN", "applicant 1 of 3: the consent token's issuer ...", evidence)
    heads = len(RECORDED["recorder"].heads)
    for ask in ("screen", "lookup"):
        with fed.client(person="bank") as bank, pytest.raises(FederationError) as err:
            getattr(bank, ask)(ids, tokens=honest, **REVIEW)
        assert err.value.code == "ANSWER_STATEMENT_INVALID", (ask, err.value)
        assert "coordinator's word" in err.value.message
    assert len(RECORDED["recorder"].heads) == heads
    monkeypatch.undo()
    with fed.client(person="bank") as bank:  # the honest coordinator: nobody withheld
        screened = bank.screen(ids, tokens=honest, **REVIEW)  # type: ignore[arg-type]
    assert screened.withheld == {} and screened.complete


def test_a_region_signed_refusal_relayed_as_it_came_withholds_exactly_its_applicants(
    fed: harness.Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The honest path, checked against the refusal itself: the client withholds the places hangzhou signed."""
    ids, given, refusal = _real_refusal(fed, monkeypatch)
    with fed.client(person="bank") as bank:
        screened = bank.screen(ids, tokens=given, **REVIEW)  # type: ignore[arg-type]
    assert screened.withheld == {2: "CONSENT_ISSUER_UNKNOWN"} and screened.complete
    cities = fed.oracle(  # each applicant's cities with an open loan, over every region's raw rows
        "SELECT person_id, COUNT(DISTINCT city_code) FROM loans "
        "WHERE status IN ('active', 'overdue') GROUP BY person_id"
    )
    expected = dict(cities)
    assert [f.loan_cities for f in screened.facts] == [expected[ids[0]], expected[ids[1]], None]
