"""An applicant refused by any region is withheld by every region, and the rest of the batch is answered.

Here hangzhou's policy does not accept the consent service ``third-consent``, which shanghai and nanjing accept,
and every region's policy would let the other two answer without hangzhou (a per-city answer for the purpose, two
regions enough for the secure aggregation): the weakest setting for a bank that hopes one region's refusal leaves
the others' figures about that applicant to it. A screening with such tokens answers every other applicant, and
no answer about a refused one, from any region, reaches the bank.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import harness
import pytest
from consent_federation import ISSUER, NODES, THIRD, issuer_federation, people, tokens
from coordinator_recorder import CoordinatorRecorder

from hpf.client import screening as client_module
from hpf.client.screening import WITHHELD
from hpf.federation.crypto.lookup_codec import layout_fingerprint
from hpf.federation.errors import FederationError

REVIEW = {"purpose": "loan-review"}
RECORDED: dict[str, CoordinatorRecorder] = {}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    with issuer_federation(tmp_path_factory.mktemp("withholding"), 13, ["loan-review"]) as (f, recorder):
        RECORDED["recorder"] = recorder
        yield f


def test_an_applicant_one_region_refuses_is_withheld_everywhere_and_the_rest_answered(
    fed: harness.Federation,
) -> None:
    ids = people(fed, 6)
    refused_places = [1, 4]
    good = tokens(fed, [p for i, p in enumerate(ids) if i not in refused_places], ISSUER)
    third = tokens(fed, [ids[i] for i in refused_places], THIRD)  # valid, for the bank: only hangzhou refuses
    given = [third.pop(0) if i in refused_places else good.pop(0) for i in range(len(ids))]
    recorder = RECORDED["recorder"]
    heads_before, asked_before = len(recorder.heads), len(recorder.from_client("/Lookup"))
    with fed.client(person="bank") as bank:
        screened = bank.screen(ids, tokens=given, **REVIEW)  # type: ignore[arg-type]
        kept = [i for i in range(len(ids)) if i not in refused_places]
        reference = bank.lookup([ids[i] for i in kept], tokens=[given[i] for i in kept], **REVIEW)  # type: ignore[arg-type]
    assert screened.withheld == {1: "CONSENT_ISSUER_UNKNOWN", 4: "CONSENT_ISSUER_UNKNOWN"}
    assert [screened.facts[i] for i in refused_places] == [WITHHELD, WITHHELD]
    assert [screened.facts[i] for i in kept] == reference.facts
    assert screened.answered == sorted(NODES) and screened.complete
    # the bank asked three times: all six (refused by hangzhou, naming the places), the four, and the reference
    asked = recorder.from_client("/Lookup")[asked_before:]
    subjects = [_spec(r).subjects for r in asked]
    assert subjects == [6, 4, 4]
    # only the answered requests reached the bank: no head (nor ciphertext) for the refused one, though shanghai
    # and nanjing had answered it to the coordinator
    heads = recorder.heads[heads_before:]
    assert [h.query_id for h in heads] == [*screened.query_ids, *reference.query_ids]
    assert len(screened.query_ids) == 1
    # every region laid out the same vector: the layout of four people and the facts a loan review asks for
    answers = [r.message for r in recorder.from_nodes(0) if r.method.endswith("/Lookup") and r.message is not None]
    signed = {a.plan_fingerprint for a in answers[-6:]}  # the screening's answered request and the reference
    assert signed == {layout_fingerprint(4, 1, ("duplicate_loans", "loan_cities"))}
    for node in NODES:
        entries = [json.loads(line) for line in (fed.audit_dir(node) / "entries.jsonl").read_text().splitlines()]
        lookups = [e for e in entries if e["operation"] == "lookup"][-3:]
        if node == "hangzhou":
            assert [(e["decision"], e.get("code")) for e in lookups][0] == ("refused", "CONSENT_ISSUER_UNKNOWN")


def _spec(request: object) -> object:
    from hpf.federation.generated import hpf_federation_pb2 as pb

    envelope = pb.QueryEnvelope()
    envelope.ParseFromString(request.envelope.envelope)  # type: ignore[attr-defined]
    return envelope.lookup


def test_a_lookup_with_a_refused_applicant_is_refused_whole(fed: harness.Federation) -> None:
    """``hpf lookup`` does not withhold: one applicant refused by one region refuses the request, and the
    coordinator does not answer it with the regions that accepted (no re-run without the refusing region)."""
    ids = people(fed, 2)
    given = [*tokens(fed, ids[:1], ISSUER), *tokens(fed, ids[1:], THIRD)]
    with fed.client(person="bank") as bank, pytest.raises(FederationError) as err:
        bank.lookup(ids, tokens=given, **REVIEW)  # type: ignore[arg-type]
    assert err.value.code == "CONSENT_ISSUER_UNKNOWN" and "applicant 2 of 2" in err.value.message
    assert "hangzhou" in err.value.message and ids[1] not in err.value.message


def test_the_retries_are_bounded(fed: harness.Federation, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each retry is a new signed request; past the bound, the refusal stands."""
    ids = people(fed, 3)
    given = [*tokens(fed, ids[:1], ISSUER), *tokens(fed, ids[1:], THIRD)]
    monkeypatch.setattr(client_module, "MAX_WITHHOLD_RETRIES", 0)
    with fed.client(person="bank") as bank, pytest.raises(FederationError) as err:
        bank.screen(ids, tokens=given, **REVIEW)  # type: ignore[arg-type]
    assert err.value.code == "CONSENT_ISSUER_UNKNOWN"
    monkeypatch.setattr(client_module, "MAX_WITHHOLD_RETRIES", 1)
    with fed.client(person="bank") as bank:  # hangzhou names both refused applicants in one refusal
        screened = bank.screen(ids, tokens=given, **REVIEW)  # type: ignore[arg-type]
    assert screened.withheld == {1: "CONSENT_ISSUER_UNKNOWN", 2: "CONSENT_ISSUER_UNKNOWN"}


def test_the_coordinator_never_sees_a_token_or_an_identifier(fed: harness.Federation) -> None:
    """The refusals name places, never identifiers; the recording holds no identifier and no token."""
    recorder = RECORDED["recorder"]
    seen = b"".join(r.wire for r in recorder.received) + b"".join(
        r.SerializeToString() for r in recorder.replies if hasattr(r, "SerializeToString")
    )
    text = seen + "".join(r.text for r in recorder.received).encode()
    for pid in people(fed, 6):
        assert pid.encode() not in text
