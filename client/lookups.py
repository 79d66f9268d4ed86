"""Person lookups and screening: identifiers checked, sealed to each region with their consent tokens, and the
facts each region answered, summed; a screening in batches, withholding the applicants a region refuses."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from hpf.client.answers import LookupAnswer
from hpf.client.session import ClientSession, missing_regions
from hpf.federation.consent import refusals as consent_refusals
from hpf.federation.consent import tokens as consent_codec
from hpf.federation.consent.verifier import ConsentVerifier
from hpf.federation.crypto import he, lookup_codec
from hpf.federation.crypto.lookup_codec import PersonFacts
from hpf.federation.crypto.lookup_consistency import check_consistent
from hpf.federation.crypto.sealing import ID_CHARS, OneTimeKey, load_public_b64
from hpf.federation.errors import (
    ConfigError,
    CryptoError,
    FederationError,
    PlanError,
    PolicyViolation,
    UnavailableError,
    error_for_code,
)
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.person_id import packed_ids_valid, validate_person_id
from hpf.federation.trust.envelope import query_id


def _total(cells: Sequence[PersonFacts]) -> PersonFacts:
    """Per-city facts summed into federation-wide ones (None stays None)."""
    out: dict[str, Any] = {}
    for name in PersonFacts.__dataclass_fields__:
        values = [getattr(c, name) for c in cells]
        out[name] = None if any(v is None for v in values) else sum(values)
    return PersonFacts(**out)


# the facts shown for an applicant withheld for its consent: placeholders, never figures (see LookupAnswer.withheld)
WITHHELD = PersonFacts(None, None, None, None, None, None, None, None, None, None, 0)
# requests one screening batch may be asked again for, each without the applicants a region refused for their
# consent (a region's signed refusal names the first it refuses and up to 30 more): beyond this, the refusal stands
MAX_WITHHOLD_RETRIES = 8


def read_tokens(tokens: Sequence[str] | None, people: int) -> list[bytes] | None:
    """Consent tokens in text form, one per person, in the binary form sealed with the identifiers (parsed once,
    by the client's own check, :meth:`LookupClient.consent_refusals`); an empty cell or text that is not base64url
    becomes ``b""``, which that check refuses as ``CONSENT_MALFORMED``, as it refuses bytes that are no token."""
    if tokens is None:
        return None
    if len(tokens) != people:
        raise PlanError(f"{len(tokens)} consent token(s) for {people} people", code="CONSENT_TOKENS_MISMATCH")
    out = []
    for text in tokens:
        try:
            out.append(consent_codec.token_bytes(text))
        except consent_codec.ConsentError:
            out.append(b"")
    return out


class ConsentRefused(PolicyViolation):
    """A lookup request refused by a region for some applicants' consent, with ``places``: the applicants (by
    place from 0, with the code of the check each failed) the region signed for, checked against its key from the
    pinned catalog (:func:`federation.consent.refusals.withheld_places`)."""

    def __init__(self, refusal: FederationError, places: dict[int, str]) -> None:
        super().__init__(refusal.message, code=refusal.code, hint=refusal.hint, rule=refusal.rule)
        self.places = places


def check_person_ids(person_ids: Sequence[str]) -> list[str]:
    """Normalised identifiers, or PERSON_ID_INVALID naming the first bad one by position (never by value)."""
    normal = [p.strip().upper() if isinstance(p, str) else p for p in person_ids]
    if all(isinstance(p, str) and len(p) == 18 and p.isascii() for p in normal) and packed_ids_valid(
        "".join(normal).encode("ascii")
    ):
        return normal
    out = []
    for i, pid in enumerate(person_ids):
        try:
            out.append(validate_person_id(pid))
        except PlanError as err:
            where = f"identifier {i + 1}: " if len(person_ids) > 1 else ""
            raise PlanError(where + err.message, code=err.code, hint=err.hint) from None
    return out


LOOKUP_BATCH = 4550  # people per request: ten full ciphertexts of nine slots per person
SEALED_BYTES_PER_REQUEST = 3 * 1024 * 1024  # a request's sealed copies stay well under the coordinator's 4 MiB


class LookupClient(ClientSession):
    """The lookups and screenings of :class:`client.federation_client.FederationClient`."""

    def _agreement_keys(self, regions: Sequence[str]) -> dict[str, bytes]:
        """Each region's agreement key from the catalog this profile pins: a key the coordinator sent could be
        its own, and it would read every identifier sealed to it."""
        if self.profile.catalog is None:
            raise ConfigError(
                "a person lookup seals the identifier to each region's key, and this profile pins no catalog "
                "to take the keys from",
                code="LOOKUP_KEYS_UNPINNED",
                hint="name the federation catalog in the profile ('catalog: federation.yaml')",
            )
        nodes = {n.id: n for n in self.catalog.nodes}
        keys = {}
        for region in regions:
            published = nodes[region].agreement_key
            if published is None:
                raise ConfigError(
                    f"the pinned catalog has no agreement_key for region {region}",
                    code="LOOKUP_KEY_MISSING",
                    hint="publish each node's agreement key in the catalog (a node logs it when it starts)",
                )
            keys[region] = load_public_b64(published)
        return keys

    def lookup_regions(self, exclude_home: bool = False) -> list[str]:
        """The regions a lookup asks: every region, or all but the asker's own."""
        regions = [n.id for n in self.catalog.nodes]
        if exclude_home:
            home = self.signer.identity.region
            if home is None or home not in regions:
                raise ConfigError(
                    "--exclude-home needs a certificate with a home region of this federation",
                    code="LOOKUP_NO_HOME",
                )
            regions.remove(home)
            if not regions:
                raise ConfigError("no region is left to ask", code="LOOKUP_NO_HOME")
        return regions

    def lookup(
        self,
        person_ids: Sequence[str],
        *,
        purpose: str | None = None,
        consent: str | None = None,
        exclude_home: bool = False,
        by_city: bool = False,
        deadline_ms: int | None = None,
        tokens: Sequence[str] | None = None,
        facts: Sequence[str] | None = None,
    ) -> LookupAnswer:
        """Federation-wide ``facts`` about each person (default: :meth:`facts_for` the purpose), in one request.
        Identifiers are checked first, then sealed to each region separately, each with its consent token when
        ``tokens`` (text, one per person) are given; the coordinator never sees them. One applicant refused for
        their consent refuses the request (a screening withholds them instead)."""
        t0 = time.perf_counter()
        ids = check_person_ids(person_ids)
        if not ids:
            raise PlanError("no identifier to look up", code="PERSON_ID_INVALID")
        if len(set(ids)) != len(ids):
            raise PlanError(
                "a person is listed twice in one lookup",
                code="PERSON_ID_DUPLICATE",
                hint="ask about each person once (hpf screen merges repeated applicants itself)",
            )
        asked = self.facts_for(purpose, facts)
        sealed_tokens = read_tokens(tokens, len(ids))
        if sealed_tokens is not None:
            asked_for = self.profile.purpose if purpose is None else purpose
            for place, code in sorted(self.consent_refusals(ids, sealed_tokens, asked_for, asked).items()):
                message, hint = consent_codec.REFUSALS[code]
                raise error_for_code(code, f"applicant {place + 1} of {len(ids)}: {message}", hint)
        regions = self.lookup_regions(exclude_home)
        region_keys = self._agreement_keys(regions)
        return self._ask(ids, regions, region_keys, purpose, consent, by_city, deadline_ms, t0, sealed_tokens, asked)

    def facts_for(self, purpose: str | None, facts: Sequence[str] | None = None) -> tuple[str, ...]:
        """The facts a lookup asks for: ``facts`` as given (checked), else the fixed default for this asker's role
        (from its certificate) and the purpose (:data:`federation.crypto.lookup_codec.DEFAULT_FACTS`)."""
        if facts is None:
            role = self.signer.identity.role
            return lookup_codec.default_facts(role, self.profile.purpose if purpose is None else purpose)
        try:
            return lookup_codec.requested_facts(facts)
        except ValueError as err:
            raise PlanError(
                str(err), code="LOOKUP_FACTS_UNKNOWN", hint="e.g. --facts duplicate_loans,loan_cities"
            ) from None

    def _ask(
        self,
        ids: list[str],
        regions: list[str],
        region_keys: dict[str, bytes],
        purpose: str | None,
        consent: str | None,
        by_city: bool,
        deadline_ms: int | None,
        t0: float | None = None,
        tokens: list[bytes] | None = None,
        facts: tuple[str, ...] = lookup_codec.FACTS,
    ) -> LookupAnswer:
        """One lookup request for ``facts`` about ``ids`` (checked, each once) to ``regions``, sealed to
        ``region_keys`` with their consent ``tokens`` if any; its timings count from ``t0`` (default: now)."""
        t0 = time.perf_counter() if t0 is None else t0
        keys = self.keys
        one_time = OneTimeKey()
        spec = pb.LookupSpec(
            subjects=len(ids),
            seal_public_key=one_time.public,
            regions=regions,
            breakdown=by_city,
            subjects_commitment=one_time.commitment(ids, tokens),
            facts=facts,
        )
        signed = self.signer.sign(
            sql="",
            context_digest=he.context_digest(keys.public_context()),
            federation=self.catalog.federation,
            operation="lookup",
            purpose=self.profile.purpose if purpose is None else purpose,
            consent_ref=consent or "",
            lookup=spec,
            max_runs=self.profile.max_runs,
        )
        qid = query_id(signed)
        sealed = [
            pb.SealedSubjects(node_id=r, blob=one_time.seal(ids, region_keys[r], qid, r, tokens)) for r in regions
        ]
        request = pb.LookupRequest(
            envelope=signed,
            public_context=keys.public_context(),
            he_format=he.HE_FORMAT,
            deadline_ms=self.profile.deadline_ms if deadline_ms is None else deadline_ms,
            sealed=sealed,
            sealed_consent=b"" if tokens is None else one_time.seal_consent(tokens, qid),
        )
        t_sealed = time.perf_counter()
        cells = len(regions) if by_city else 1
        sizes = lookup_codec.chunk_sizes(len(ids), cells, facts)
        try:
            streamed = self._streamed(
                self._stub.Lookup(request, timeout=self.profile.timeout_s), len(sizes), regions, signed
            )
        except PolicyViolation as err:
            if err.code not in consent_codec.REFUSALS:
                raise
            places = consent_refusals.withheld_places(
                err.consent_refusal, query_id=qid, people=len(ids), regions=regions, audit_keys=self._audit_keys()
            )
            raise ConsentRefused(err, places) from None
        reply = streamed.head
        t_rpc = time.perf_counter()
        if reply.query_id != qid or not reply.answered:
            raise CryptoError("the answer is for another question", code="ANSWER_CORRUPT")
        # regions may answer without some of those asked (a re-run with the survivors): each one left out must be
        # named missing, or an answer short of a region would pass for a complete one
        if sorted([*reply.answered, *(m.node_id for m in reply.missing)]) != sorted(regions):
            raise CryptoError(
                "the answer does not say of every region asked whether it answered or is missing",
                code="ANSWER_CORRUPT",
            )
        if not by_city and len(reply.answered) < min(2, len(regions)):
            gone = ", ".join(f"{m['node_id']} ({m['code']})" for m in missing_regions(reply))
            raise UnavailableError(
                f"only region {reply.answered[0]} answered, region(s) {gone} missing: its figures would be that "
                "city's own, and a lookup without --by-city shows federation-wide ones only",
                code="LOOKUP_TOO_FEW_REGIONS",
                hint="ask again when more regions are reachable",
            )
        if reply.plan_fingerprint != lookup_codec.layout_fingerprint(len(ids), cells, facts):
            raise CryptoError("the answer does not match the lookup's layout", code="CIPHERTEXT_SHAPE")
        receipts, verified = self._receipts(reply, signed)
        got = self._checked(keys, streamed, signed, sizes)
        if got.terms.get("mode") != "exact":
            raise CryptoError("a lookup's answer must be exact", code="ANSWER_STATEMENT_INVALID")
        slots = np.concatenate(got.slots)
        grid = lookup_codec.decode_facts(slots, subjects=len(ids), cells=cells, facts=facts)
        check_consistent(grid, answered=[regions.index(r) for r in reply.answered], by_city=by_city)
        self._keep(receipts)
        t_dec = time.perf_counter()
        return LookupAnswer(
            facts=[_total(row) if len(row) > 1 else row[0] for row in grid],
            regions=regions,
            answered=list(reply.answered),
            missing=missing_regions(reply),
            query_ids=[qid],
            by_city=[{r: f for r, f in zip(regions, row, strict=True) if r in reply.answered} for row in grid]
            if by_city
            else None,
            timings={
                "seal_ms": (t_sealed - t0) * 1e3,
                "round_trip_ms": (t_rpc - t_sealed) * 1e3,
                "decrypt_ms": (t_dec - t_rpc) * 1e3,  # every check, the sum, the decryption and the decoding
                "total_ms": (t_dec - t0) * 1e3,
                **got.timings,
            },
            receipts=receipts,
            receipts_verified=verified,
            verified=got.verified,
            facts_asked=facts,
        )

    def screen(
        self,
        person_ids: Sequence[str],
        *,
        purpose: str | None = None,
        consent: str | None = None,
        exclude_home: bool = False,
        batch: int = LOOKUP_BATCH,
        parallel: int = 2,
        progress: Callable[[int], None] | None = None,
        tokens: Sequence[str] | None = None,
        facts: Sequence[str] | None = None,
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
        first = dict(zip(reversed(asked), reversed(all_tokens), strict=True)) if all_tokens is not None else {}
        ids = list(dict.fromkeys(asked))  # each person once; a repeated applicant gets the same facts
        withheld: dict[int, str] = {}
        if all_tokens is not None:  # applicants whose token the regions would refuse are not asked about
            asked_for = self.profile.purpose if purpose is None else purpose
            refused = self.consent_refusals(asked, all_tokens, asked_for, wanted)
            # a person listed twice is asked about once, under their first token: withheld at every place, each
            # with the code of one of their tokens refused
            codes = {asked[i]: code for i, code in sorted(refused.items(), reverse=True)}
            withheld = {i: refused.get(i, codes[pid]) for i, pid in enumerate(asked) if pid in codes}
            out = set(codes)
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
        regions = self.lookup_regions(exclude_home)
        region_keys = self._agreement_keys(regions)
        # each region gets its own sealed copy of the identifiers (the tokens travel once): with many regions,
        # fewer people fit in one request
        per_person = len(regions) * (ID_CHARS + 1) + (2 + max(map(len, all_tokens)) if all_tokens is not None else 0)
        batch = max(1, min(batch, SEALED_BYTES_PER_REQUEST // per_person))
        batches = [ids[i : i + batch] for i in range(0, len(ids), batch)]
        answers: list[LookupAnswer] = []
        refused_by_region: dict[str, str] = {}
        done = 0
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            futures = [
                pool.submit(
                    self._ask_withholding,
                    b,
                    regions,
                    region_keys,
                    purpose,
                    consent,
                    [first[pid] for pid in b] if all_tokens is not None else None,
                    wanted,
                )
                for b in batches
            ]
            try:
                for b, future in zip(batches, futures, strict=True):
                    answer, refused_here = future.result()
                    if answer is not None:
                        answers.append(answer)
                    refused_by_region |= refused_here
                    done += len(b)
                    if progress is not None:  # in applicants asked, repeated ones included
                        progress(done * len(asked) // len(ids))
            finally:
                for future in futures:
                    future.cancel()
        withheld |= {i: refused_by_region[pid] for i, pid in enumerate(asked) if pid in refused_by_region}
        ids = [pid for pid in ids if pid not in refused_by_region]
        missing: dict[str, dict[str, str]] = {}
        for a in answers:
            for m in a.missing:
                missing.setdefault(m["node_id"], m)
        by_person = dict(zip(ids, (f for a in answers for f in a.facts), strict=True))
        return LookupAnswer(
            facts=[by_person.get(pid, WITHHELD) for pid in asked],
            withheld=withheld,
            facts_asked=wanted,
            regions=regions,
            answered=sorted(set.intersection(*(set(a.answered) for a in answers))) if answers else [],
            missing=list(missing.values()),
            query_ids=[q for a in answers for q in a.query_ids],
            receipts=[r for a in answers for r in a.receipts],
            receipts_verified=sum(a.receipts_verified for a in answers),
            verified=all(a.verified for a in answers),
        )

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
        refused: dict[str, str] = {}
        for attempt in range(MAX_WITHHOLD_RETRIES + 1):
            keep = [i for i, pid in enumerate(ids) if pid not in refused]
            if not keep:
                return None, refused
            sent = [ids[i] for i in keep]
            try:
                answer = self._ask(
                    sent,
                    regions,
                    region_keys,
                    purpose,
                    consent,
                    False,
                    None,
                    None,
                    None if tokens is None else [tokens[i] for i in keep],
                    facts,
                )
                return answer, refused
            except ConsentRefused as err:
                if attempt == MAX_WITHHOLD_RETRIES:
                    raise
                refused |= {sent[place]: code for place, code in err.places.items()}
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def consent_refusals(
        self, ids: Sequence[str], tokens: Sequence[bytes], purpose: str, facts: Sequence[str] = lookup_codec.FACTS
    ) -> dict[int, str]:
        """The refusal code of each token (by place) that fails a check the client can make itself against the
        pinned catalog's issuers: its signature, this client's certificate as grantee, the purpose, the facts
        asked for, its expiry and its person. Whether a region accepts the issuer, and its revocations, only the
        region knows."""
        issuers = {i.id: base64.b64decode(i.key) for i in self.catalog.issuers}
        verifier = ConsentVerifier(issuers)
        grantee = consent_codec.grantee_of(self.signer.certificate)
        refused = {}
        for place, (pid, token) in enumerate(zip(ids, tokens, strict=True)):
            code = verifier.check(token, pid, grantee=grantee, purpose=purpose, facts=facts)
            if code is not None:
                refused[place] = code
        return refused
