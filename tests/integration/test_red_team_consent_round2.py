"""Withholding and consent attacked end to end, second round: a coordinator that only delays, and what the
coordinator and the regions' logs see of a screening. Each test asserts the secure behaviour, so it fails while
the attack succeeds.

The federation is tests/consent_federation.py's: three regions, two issuers, hangzhou accepting only the first,
federation-wide answers only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import harness
import pytest
from consent_federation import ISSUER, KEYS, LOANS, NODES, THIRD, issuer_federation, people, tokens
from coordinator_recorder import CoordinatorRecorder

from hpf.coordinator.fanout import FanOut
from hpf.federation.consent import tokens as consent
from hpf.federation.consent.issuer import issue_batch
from hpf.federation.errors import FederationError
from hpf.federation.trust import certificates

REVIEW = {"purpose": "loan-review"}
RECORDED: dict[str, CoordinatorRecorder] = {}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    with issuer_federation(tmp_path_factory.mktemp("red-consent-2"), 23, ()) as (f, recorder):
        RECORDED["recorder"] = recorder
        yield f


def _expiring(fed: harness.Federation, pid: str, seconds: int) -> str:
    """The bank's token for ``pid``, valid for ``seconds`` more."""
    grantee = consent.grantee_of(certificates.load_certificate((fed.pki_dir / "people" / "bank.pem").read_bytes()))
    (token,) = issue_batch(
        KEYS[ISSUER],
        ISSUER,
        [pid],
        grantee=grantee,
        purpose="loan-review",
        facts=LOANS,
        not_after=int(time.time()) + seconds,
    )
    return consent.token_text(token)


def test_a_coordinator_that_holds_a_request_until_a_consent_expires_cannot_get_the_applicant_withheld(
    fed: harness.Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bank screens three applicants, every token valid when it signs (its own check passes). The coordinator
    holds the request a few seconds, well inside the envelope's time window, until one consent has expired: every
    region then signs a true CONSENT_EXPIRED refusal of that applicant for this very request, and the client
    withholds an applicant whose consent held when the bank asked. A delay is all it takes, and the coordinator
    picks whom (it sees no token, but the client checks expiry itself, so a token near its end is one a bank
    would send). Expiry judged at the signed question's time (bound to the regions' clocks by the window) would
    leave a delay nothing to act on."""
    ids = people(fed, 3)
    given = [*tokens(fed, ids[:2], ISSUER), _expiring(fed, ids[2], 3)]
    honest = FanOut.lookup

    async def held(self: FanOut, *args: object, **kwargs: object) -> object:
        await asyncio.sleep(5)  # past the third token's expiry; far inside the 300 s window
        return await honest(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(FanOut, "lookup", held)
    with fed.client(person="bank") as bank:
        assert (
            bank.consent_refusals(ids, [consent.parse_token_text(t).encode() for t in given], "loan-review", LOANS)
            == {}
        )
        try:
            screened = bank.screen(ids, tokens=given, **REVIEW)  # type: ignore[arg-type]
        except FederationError as err:  # told the request went stale: secure too
            assert not err.code.startswith("CONSENT_"), err
            return
    assert screened.withheld == {}, f"a coordinator's delay withheld an applicant: {screened.withheld}"


def test_the_coordinator_sees_no_identifier_or_token_of_a_screening_with_a_refusal(fed: harness.Federation) -> None:
    """Holds: the refusal the coordinator relays names places and codes, never an identifier or a token (it does
    show which place in the bank's request failed which check)."""
    ids = people(fed, 4)
    given = [*tokens(fed, ids[:3], ISSUER), *tokens(fed, ids[3:], THIRD)]
    recorder = RECORDED["recorder"]
    before = len(recorder.received)
    with fed.client(person="bank") as bank:
        screened = bank.screen(ids, tokens=given, **REVIEW)  # type: ignore[arg-type]
    assert screened.withheld == {3: "CONSENT_ISSUER_UNKNOWN"} and screened.complete
    seen = (
        b"".join(r.wire for r in recorder.received[before:])
        + "".join(r.text for r in recorder.received[before:]).encode()
    )
    for secret in (*ids, *(t[:32] for t in given), *(t[-32:] for t in given)):
        assert secret.encode() not in seen


def test_tokens_that_are_not_tokens_are_withheld_by_the_client_and_the_regions_keep_answering(
    fed: harness.Federation,
) -> None:
    """Holds: tokens that are not tokens, a token cut short and one of another person are refused by the client
    before anything is sent (withheld by code), and the regions keep answering."""
    ids = people(fed, 4)
    good = tokens(fed, ids, ISSUER)
    given = ["not-a-token", good[1][:-8], good[0], good[3]]  # the third is the first person's
    with fed.client(person="bank") as bank:
        screened = bank.screen(ids, tokens=given, **REVIEW)  # type: ignore[arg-type]
        assert screened.withheld == {
            0: "CONSENT_MALFORMED",
            1: "CONSENT_MALFORMED",
            2: "CONSENT_PERSON_MISMATCH",
        }
        again = bank.screen(ids, tokens=good, **REVIEW)  # type: ignore[arg-type]
    assert again.withheld == {} and again.complete and sorted(again.answered) == sorted(NODES)


@pytest.mark.parametrize("bad_first", [False, True])
def test_a_repeated_applicant_withheld_for_one_of_its_tokens_is_reported_withheld_at_every_place(
    fed: harness.Federation, bad_first: bool
) -> None:
    """A screening file lists an applicant twice (hpf screen merges repeats), once with a token the client
    refuses itself. The applicant is withheld at both places, but only the refused place says so: the other shows
    no figures and no reason, as if the applicant had no loans anywhere rather than no consent."""
    from hpf.client.screening import WITHHELD

    ids = people(fed, 2)
    good = tokens(fed, ids, ISSUER)
    if bad_first:
        asked, given = [ids[0], ids[1], ids[0]], ["not-a-token", good[1], good[0]]
    else:
        asked, given = [ids[0], ids[1], ids[0]], [good[0], good[1], "not-a-token"]
    with fed.client(person="bank") as bank:
        screened = bank.screen(asked, tokens=given, **REVIEW)  # type: ignore[arg-type]
    shown_withheld = {i for i, f in enumerate(screened.facts) if f is WITHHELD}
    assert shown_withheld == set(screened.withheld), (shown_withheld, screened.withheld)
