"""Person lookups: identifiers and consent tokens checked, sealed to each region, and one request asked through the
coordinator, its answer checked and decrypted here (:mod:`client.lookup_reply`); a screening asks many such
requests (:mod:`client.screening`)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hpf.client import lookup_reply
from hpf.client.answer_check import StreamedAnswer
from hpf.client.answers import LookupAnswer
from hpf.client.coordinator_calls import CoordinatorTransport
from hpf.client.profile import ClientProfile
from hpf.client.session import ClientSession, missing_regions
from hpf.federation.consent import refusals as consent_refusals
from hpf.federation.consent import tokens as consent_codec
from hpf.federation.consent.verifier import ConsentVerifier
from hpf.federation.crypto import he, lookup_codec
from hpf.federation.crypto.sealing import OneTimeKey, load_public_b64
from hpf.federation.errors import ConfigError, FederationError, PlanError, PolicyViolation, error_for_code
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.person_id import packed_ids_valid, validate_person_id
from hpf.federation.trust.envelope import query_id

LOOKUP_BATCH = 4550  # people per request: ten full ciphertexts of nine slots per person


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


@dataclass(frozen=True)
class LookupScope:
    """What every request of one lookup or screening shares: the regions asked with each one's agreement key, the
    purpose (None: the profile's) and consent reference, the facts asked for, per city or not, and the deadline
    (None: the profile's)."""

    regions: list[str]
    region_keys: dict[str, bytes]
    purpose: str | None
    consent: str | None
    facts: tuple[str, ...]
    by_city: bool = False
    deadline_ms: int | None = None


class LookupClient(ClientSession):
    """The lookups of :class:`client.federation_client.FederationClient` (its screenings:
    :class:`client.screening.ScreeningClient`)."""

    def __init__(
        self,
        profile: ClientProfile,
        keys: he.ClientKeys | None = None,
        *,
        stub: CoordinatorTransport | None = None,
        on_lookup_answer: Callable[[LookupAnswer], None] | None = None,
    ) -> None:
        """A client as :class:`client.session.ClientSession`; ``on_lookup_answer`` is called with the answer of each
        lookup request once it passed every check (a single lookup's, or each request of a screening, from the
        thread that asked it). It must not raise: an exception from it ends the lookup or the screening."""
        super().__init__(profile, keys, stub=stub)
        self._on_lookup_answer = on_lookup_answer

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
            refused = self.consent_refusals(ids, sealed_tokens, self._purpose(purpose), asked)
            for place, code in sorted(refused.items()):
                message, hint = consent_codec.REFUSALS[code]
                raise error_for_code(code, f"applicant {place + 1} of {len(ids)}: {message}", hint)
        scope = self._scope(exclude_home, purpose, consent, asked, by_city, deadline_ms)
        return self._ask(ids, scope, sealed_tokens, t0)

    def facts_for(self, purpose: str | None, facts: Sequence[str] | None = None) -> tuple[str, ...]:
        """The facts a lookup asks for: ``facts`` as given (checked), else the fixed default for this asker's role
        (from its certificate) and the purpose (:data:`federation.crypto.lookup_codec.DEFAULT_FACTS`)."""
        if facts is None:
            return lookup_codec.default_facts(self.signer.identity.role, self._purpose(purpose))
        try:
            return lookup_codec.requested_facts(facts)
        except ValueError as err:
            raise PlanError(
                str(err), code="LOOKUP_FACTS_UNKNOWN", hint="e.g. --facts duplicate_loans,loan_cities"
            ) from None

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

    def _scope(
        self,
        exclude_home: bool,
        purpose: str | None,
        consent: str | None,
        facts: tuple[str, ...],
        by_city: bool = False,
        deadline_ms: int | None = None,
    ) -> LookupScope:
        """A lookup's scope: the regions it asks (:meth:`lookup_regions`) with their agreement keys, and the rest
        as given."""
        regions = self.lookup_regions(exclude_home)
        return LookupScope(regions, self._agreement_keys(regions), purpose, consent, facts, by_city, deadline_ms)

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

    def _ask(
        self, ids: list[str], scope: LookupScope, tokens: list[bytes] | None = None, t0: float | None = None
    ) -> LookupAnswer:
        """One lookup request about ``ids`` (checked, each once) in ``scope``, sealed to each region's key with
        their consent ``tokens`` if any; its timings count from ``t0`` (default: now). Its answer, once every check
        passed, is also handed to ``on_lookup_answer``."""
        t0 = time.perf_counter() if t0 is None else t0
        keys = self.keys
        signed, request = self._sealed_request(ids, scope, tokens)
        qid = query_id(signed)
        t_sealed = time.perf_counter()
        regions, by_city, facts = scope.regions, scope.by_city, scope.facts
        cells = len(regions) if by_city else 1
        sizes = lookup_codec.chunk_sizes(len(ids), cells, facts)
        streamed = self._send(request, signed, len(ids), regions, len(sizes))
        reply = streamed.head
        t_rpc = time.perf_counter()
        layout = lookup_codec.layout_fingerprint(len(ids), cells, facts)
        lookup_reply.check_head(reply, query_id=qid, regions=regions, layout=layout, by_city=by_city)
        receipts, verified = self._receipts(reply, signed)
        got = self._checked(keys, streamed, signed, sizes)
        answered = list(reply.answered)
        grid = lookup_reply.read_facts(
            got, people=len(ids), regions=regions, answered=answered, by_city=by_city, facts=facts
        )
        self._keep(receipts)
        t_dec = time.perf_counter()
        answer = LookupAnswer(
            facts=lookup_reply.summed(grid),
            regions=regions,
            answered=answered,
            missing=missing_regions(reply),
            query_ids=[qid],
            by_city=lookup_reply.per_city(grid, regions, answered) if by_city else None,
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
        if self._on_lookup_answer is not None:
            self._on_lookup_answer(answer)
        return answer

    def _sealed_request(
        self, ids: list[str], scope: LookupScope, tokens: list[bytes] | None
    ) -> tuple[pb.SignedEnvelope, pb.LookupRequest]:
        """A lookup request, signed: its spec commits to ``ids`` and ``tokens``, which travel sealed to each
        region's key under a one-time key of this request (the coordinator never sees them)."""
        one_time = OneTimeKey()
        spec = pb.LookupSpec(
            subjects=len(ids),
            seal_public_key=one_time.public,
            regions=scope.regions,
            breakdown=scope.by_city,
            subjects_commitment=one_time.commitment(ids, tokens),
            facts=scope.facts,
        )
        signed = self.sign("", operation="lookup", purpose=scope.purpose, consent=scope.consent, lookup=spec)
        qid = query_id(signed)
        sealed = [
            pb.SealedSubjects(node_id=r, blob=one_time.seal(ids, scope.region_keys[r], qid, r, tokens))
            for r in scope.regions
        ]
        request = pb.LookupRequest(
            envelope=signed,
            public_context=self.keys.public_context(),
            he_format=he.HE_FORMAT,
            deadline_ms=self.profile.deadline_ms if scope.deadline_ms is None else scope.deadline_ms,
            sealed=sealed,
            sealed_consent=b"" if tokens is None else one_time.seal_consent(tokens, qid),
        )
        return signed, request

    def _send(
        self, request: pb.LookupRequest, signed: pb.SignedEnvelope, people: int, regions: list[str], chunks: int
    ) -> StreamedAnswer:
        """The streamed answer to a lookup request of ``people`` applicants; a region's refusal of some of them for
        their consent is :class:`ConsentRefused`, naming those it signed for (``withheld_places``)."""
        try:
            return self._streamed(self._stub.Lookup, request, chunks, regions, signed)
        except PolicyViolation as err:
            if err.code not in consent_codec.REFUSALS:
                raise
            places = consent_refusals.withheld_places(
                err.consent_refusal,
                query_id=query_id(signed),
                people=people,
                regions=regions,
                audit_keys=self._audit_keys(),
            )
            raise ConsentRefused(err, places) from None
