"""Screening: many people asked about in batches, each batch one lookup request (:mod:`client.lookups`), with
every identifier and consent token checked once, before the first request; an applicant refused for their consent
is withheld, by every region, and the rest are answered."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from hpf.client.answers import LookupAnswer
from hpf.client.lookups import (
    LOOKUP_BATCH,
    ConsentRefused,
    LookupClient,
    LookupScope,
    check_person_ids,
    read_tokens,
)
from hpf.federation.crypto.lookup_codec import PersonFacts
from hpf.federation.crypto.sealing import ID_CHARS
from hpf.federation.errors import PlanError

# the facts shown for an applicant withheld for its consent: placeholders, never figures (see LookupAnswer.withheld)
WITHHELD = PersonFacts(None, None, None, None, None, None, None, None, None, None, 0)
# requests one screening batch may be asked again for, each without the applicants a region refused for their
# consent (a region's signed refusal names the first it refuses and up to 30 more): beyond this, the refusal stands
MAX_WITHHOLD_RETRIES = 8
SEALED_BYTES_PER_REQUEST = 3 * 1024 * 1024  # a request's sealed copies stay well under the coordinator's 4 MiB


class ScreeningClient(LookupClient):
    """The screenings of :class:`client.federation_client.FederationClient`."""

    def screen(
        self,
        person_ids: Sequence[str],
        *,
        tokens: Sequence[str] | None = None,
        facts: Sequence[str] | None = None,
        purpose: str | None = None,
        consent: str | None = None,
        exclude_home: bool = False,
        batch: int = LOOKUP_BATCH,
        parallel: int = 2,
        progress: Callable[[int], None] | None = None,
    ) -> LookupAnswer:
        """``facts`` (default: :meth:`facts_for` the purpose) about many people, ``batch`` per request with
        ``parallel`` requests in flight; every identifier (and consent token, one per person when given) is checked
        once, before the first request. ``progress`` is called with the number of people done so far.

        An applicant refused for their consent is withheld, by every region, and the rest are answered: those the
        client's own check refuses are never sent, and a request that a region refuses for one applicant (naming
        its place) is asked again without them, as a new signed request (at most :data:`MAX_WITHHOLD_RETRIES`
        times per batch). A refused request has no answer at all, so no region's figures for a withheld applicant
        reach the asker."""
        asked = check_person_ids(person_ids)
        if not asked:
            raise PlanError("no identifier to screen", code="PERSON_ID_INVALID")
        wanted = self.facts_for(purpose, facts)
        all_tokens = read_tokens(tokens, len(asked))
        ids = list(dict.fromkeys(asked))  # each person once; a repeated applicant gets the same facts
        withheld: dict[int, str] = {}
        first: dict[str, bytes] | None = None
        if all_tokens is not None:  # applicants whose token the regions would refuse are not asked about
            first = dict(zip(reversed(asked), reversed(all_tokens), strict=True))  # each person's first token
            withheld = self._refused_by_client(asked, all_tokens, self._purpose(purpose), wanted)
            out = {asked[i] for i in withheld}
            ids = [pid for pid in ids if pid not in out]
            if not ids:
                return LookupAnswer(
                    facts=[WITHHELD] * len(asked),
                    regions=[],
                    answered=[],
                    missing=[],
                    query_ids=[],
                    withheld=withheld,
                    facts_asked=wanted,
                )
        scope = self._scope(exclude_home, purpose, consent, wanted)
        size = _batch_size(batch, len(scope.regions), all_tokens)
        batches = [ids[i : i + size] for i in range(0, len(ids), size)]
        answers, refused_by_region = self._ask_batches(batches, scope, first, parallel, progress, len(asked))
        withheld |= {i: refused_by_region[pid] for i, pid in enumerate(asked) if pid in refused_by_region}
        ids = [pid for pid in ids if pid not in refused_by_region]
        return _merged(asked, ids, answers, withheld, wanted, scope.regions)

    def _refused_by_client(
        self, asked: list[str], tokens: list[bytes], purpose: str, facts: tuple[str, ...]
    ) -> dict[int, str]:
        """The applicants (by place) whose token fails the client's own check (:meth:`consent_refusals`), with
        its code. A person listed twice is asked about once, under their first token: withheld at every place,
        each with the code of one of their tokens refused."""
        refused = self.consent_refusals(asked, tokens, purpose, facts)
        codes = {asked[i]: code for i, code in sorted(refused.items(), reverse=True)}
        return {i: refused.get(i, codes[pid]) for i, pid in enumerate(asked) if pid in codes}

    def _ask_batches(
        self,
        batches: list[list[str]],
        scope: LookupScope,
        tokens: dict[str, bytes] | None,
        parallel: int,
        progress: Callable[[int], None] | None,
        applicants: int,
    ) -> tuple[list[LookupAnswer], dict[str, str]]:
        """Every batch asked in ``scope`` (:meth:`_ask_withholding`, ``parallel`` at a time, each person with their
        ``tokens``): the answers, and the applicants some region refused with their codes. ``progress`` is told
        the people done in ``applicants`` asked, repeated ones included."""
        answers: list[LookupAnswer] = []
        refused: dict[str, str] = {}
        people, done = sum(map(len, batches)), 0
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            futures = [
                pool.submit(
                    self._ask_withholding,
                    b,
                    scope.regions,
                    scope.region_keys,
                    scope.purpose,
                    scope.consent,
                    None if tokens is None else [tokens[pid] for pid in b],
                    scope.facts,
                )
                for b in batches
            ]
            try:
                for b, future in zip(batches, futures, strict=True):
                    answer, refused_here = future.result()
                    if answer is not None:
                        answers.append(answer)
                    refused |= refused_here
                    done += len(b)
                    if progress is not None:
                        progress(done * applicants // people)
            finally:
                for future in futures:
                    future.cancel()
        return answers, refused

    def _ask_withholding(
        self,
        ids: list[str],
        regions: list[str],
        region_keys: dict[str, bytes],
        purpose: str | None,
        consent: str | None,
        tokens: list[bytes] | None,
        facts: tuple[str, ...],
    ) -> tuple[LookupAnswer | None, dict[str, str]]:
        """One screening batch, asked again without each applicant a region refuses for their consent (the
        refusal names the applicant's place in the request, never the identifier): the answer for the others
        (None if none is left) and the refused applicants with their codes. Every request is newly signed, with
        a new nonce and newly sealed identifiers; a refusal of anything else, or one more than
        :data:`MAX_WITHHOLD_RETRIES` times, stands."""
        scope = LookupScope(regions, region_keys, purpose, consent, facts)
        refused: dict[str, str] = {}
        for attempt in range(MAX_WITHHOLD_RETRIES + 1):
            keep = [i for i, pid in enumerate(ids) if pid not in refused]
            if not keep:
                return None, refused
            sent = [ids[i] for i in keep]
            try:
                answer = self._ask(sent, scope, None if tokens is None else [tokens[i] for i in keep])
                return answer, refused
            except ConsentRefused as err:
                if attempt == MAX_WITHHOLD_RETRIES:
                    raise
                refused |= {sent[place]: code for place, code in err.places.items()}
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _batch_size(batch: int, regions: int, tokens: list[bytes] | None) -> int:
    """At most ``batch`` people per request, and no more than fit :data:`SEALED_BYTES_PER_REQUEST`: each region
    gets its own sealed copy of the identifiers (the tokens travel once), so with many regions fewer people fit."""
    per_person = regions * (ID_CHARS + 1) + (2 + max(map(len, tokens)) if tokens is not None else 0)
    return max(1, min(batch, SEALED_BYTES_PER_REQUEST // per_person))


def _merged(
    asked: list[str],
    ids: list[str],
    answers: list[LookupAnswer],
    withheld: dict[int, str],
    facts: tuple[str, ...],
    regions: list[str],
) -> LookupAnswer:
    """One answer for the applicants ``asked``, in their order, from the ``answers`` of the requests about
    ``ids`` (each person once, in order): the withheld ones' facts are placeholders (:data:`WITHHELD`); a region
    is answered if it answered every request, and missing as the first request that missed it says."""
    missing: dict[str, dict[str, str]] = {}
    for a in answers:
        for m in a.missing:
            missing.setdefault(m["node_id"], m)
    by_person = dict(zip(ids, (f for a in answers for f in a.facts), strict=True))
    return LookupAnswer(
        facts=[by_person.get(pid, WITHHELD) for pid in asked],
        withheld=withheld,
        facts_asked=facts,
        regions=regions,
        answered=sorted(set.intersection(*(set(a.answered) for a in answers))) if answers else [],
        missing=list(missing.values()),
        query_ids=[q for a in answers for q in a.query_ids],
        receipts=[r for a in answers for r in a.receipts],
        receipts_verified=sum(a.receipts_verified for a in answers),
        verified=all(a.verified for a in answers),
    )
