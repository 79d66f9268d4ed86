"""The client library (the `hpf query` CLI and integrators use it): plan, ask, decrypt, finish.

The BFV secret key stays in this process and the profile's key file; only the public context is sent.
The client derives the plan itself from the catalog and checks that the coordinator answered that plan.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from hpf.client import answer_check
from hpf.client.answer_check import StreamedAnswer
from hpf.client.plan_cache import PlanCache, derive
from hpf.client.profile import ClientProfile
from hpf.federation.audit.proto import check_receipt, check_still_logged, receipt_from_proto
from hpf.federation.audit.records import Checkpoint, Receipt
from hpf.federation.catalog import Catalog, load_catalog
from hpf.federation.config_files import parse_model, parse_yaml
from hpf.federation.consent import refusals as consent_refusals
from hpf.federation.consent import tokens as consent_codec
from hpf.federation.crypto import he, lookup_codec
from hpf.federation.crypto.lookup_codec import PersonFacts
from hpf.federation.crypto.sealing import ID_CHARS, OneTimeKey, load_public_b64
from hpf.federation.crypto.slot_codec import decode_totals
from hpf.federation.errors import (
    AuditError,
    ConfigError,
    CryptoError,
    FederationError,
    PlanError,
    PolicyViolation,
    UnavailableError,
    error_for_code,
    from_rpc_error,
    is_code,
    printable,
)
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.generated import hpf_federation_pb2_grpc as pb_grpc
from hpf.federation.person_id import packed_ids_valid, validate_person_id
from hpf.federation.plan import Plan
from hpf.federation.privacy.dp_plan import DpTerms, component_label, dp_terms, never_negative, suppress_small_groups
from hpf.federation.private_files import append_private
from hpf.federation.trust import verdicts
from hpf.federation.trust.envelope import Signer, query_id, require_text
from hpf.federation.trust.tls import GRPC_OPTIONS, coordinator_target, require_tls, secure_channel, with_options


@dataclass
class QueryAnswer:
    """A federated answer. ``withheld_groups``: groups some region withheld (below its minimum group size),
    listed with NULL aggregates, or dropped by a HAVING over those NULLs."""

    columns: list[str]
    rows: list[list[Any]]
    answered: list[str]
    missing: list[dict[str, str]]
    query_id: str
    timings: dict[str, float] = field(default_factory=dict)
    withheld_groups: int = 0
    receipts: list[Receipt] = field(default_factory=list)  # each answering region's audit receipt
    # how many of them were checked against the region's audit key, each with its entry proven in the log the
    # checkpoint signs (an answer whose receipt does not prove its entry is refused)
    receipts_verified: int = 0
    # what the regions signed the answer carries: {"mode": "exact"}, or DP's epsilon, delta, threshold and
    # "noise": [{"component": "SUM(x)", "sd": ...}] in the components' own units (decimal scale applied)
    privacy: dict[str, Any] = field(default_factory=lambda: {"mode": "exact"})
    suppressed_groups: int = 0  # DP: groups whose noisy row count was below the threshold, not shown
    # DP: output column position -> its aggregate (count, sum, avg) where the true value is never below 0 (a plain
    # COUNT, or a SUM or AVG of values clamped into non-negative bounds), so a negative value shown is noise alone
    never_negative: dict[int, str] = field(default_factory=dict)
    statements_verified: int = 0  # answer statements checked against the regions' audit keys
    # the sum decrypted is the client's own of exactly what the regions signed, checked against the regions' keys
    # from a pinned catalog; False without one (every check but the signatures is still made)
    verified: bool = False
    max_runs: int = 1  # the bound on runs signed into the question: at most this many runs charged at each region

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "rows": self.rows,
            "regions": {"answered": self.answered, "missing": [m["node_id"] for m in self.missing]},
            "withheld_groups": self.withheld_groups,
            "privacy": self.privacy,
            "suppressed_groups": self.suppressed_groups,
            "statements_verified": self.statements_verified,
            "verified": self.verified,
            "max_runs": self.max_runs,
        }


@dataclass
class LookupAnswer:
    """Federation-wide facts per person asked, in the order asked; ``by_city`` only for a per-city answer
    (``{region: facts}`` per person). ``missing`` regions are not in the figures."""

    facts: list[PersonFacts]
    regions: list[str]  # the regions asked
    answered: list[str]
    missing: list[dict[str, str]]
    query_ids: list[str]
    by_city: list[dict[str, PersonFacts]] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    receipts: list[Receipt] = field(default_factory=list)
    receipts_verified: int = 0
    verified: bool = False  # as QueryAnswer.verified (a screening: every one of its requests)
    # applicants (by place in the order asked) withheld for their consent, with the code of the check: those whose
    # token fails a check the client makes itself (federation.consent.tokens: issuer, signature, grantee, purpose,
    # facts, expiry, person), and those some region refused (an issuer it does not accept, a revocation), for whom the
    # request was asked again without them; their facts are placeholders, never figures
    withheld: dict[int, str] = field(default_factory=dict)
    facts_asked: tuple[str, ...] = lookup_codec.FACTS  # the facts the lookup asked for: the others are None

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass
class ExplainAnswer:
    """Every region's verdict on a question, in the catalog's order: signed by the region, or the coordinator's
    unsigned report that it got none (``signature`` empty: never an acceptance)."""

    query_id: str
    verdicts: list[pb.NodeVerdict]
    # each region's signature was checked against its key from a pinned catalog; False without one (every check
    # but the signatures is still made, so what the verdicts say is the coordinator's word)
    verified: bool = False


def _total(cells: Sequence[PersonFacts]) -> PersonFacts:
    """Per-city facts summed into federation-wide ones (None stays None)."""
    out: dict[str, Any] = {}
    for name in PersonFacts.__dataclass_fields__:
        values = [getattr(c, name) for c in cells]
        out[name] = None if any(v is None for v in values) else sum(values)
    return PersonFacts(**out)


def _missing(reply: pb.QueryResponse) -> list[dict[str, str]]:
    """The regions the coordinator says are missing, and why, fit to print: a code of the stable form (else the
    answer is refused) and a message without control or format characters."""
    if not all(is_code(m.code) for m in reply.missing):
        raise CryptoError("the answer names a missing region with a malformed code", code="ANSWER_CORRUPT")
    return [{"node_id": m.node_id, "code": m.code, "message": printable(m.message)} for m in reply.missing]


def _dp_terms(plan: Plan, signed: dict[str, Any]) -> DpTerms:
    """The DP terms the regions signed, which must be the ones this client derives from the plan and catalog
    for the epsilon, delta and threshold they name: then the noise it states is the noise the answer carries.
    Only their canonical form is read (integers and fixed decimal strings, never a float)."""
    try:
        return DpTerms.from_canonical({k: v for k, v in signed.items() if k != "mode"})
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        raise CryptoError("the regions' DP terms are not canonical", code="ANSWER_STATEMENT_INVALID") from None


# the facts shown for an applicant withheld for its consent: placeholders, never figures (see LookupAnswer.withheld)
WITHHELD = PersonFacts(None, None, None, None, None, None, None, None, None, None, 0)
# requests one screening batch may be asked again for, each without the applicants a region refused for their
# consent (a region's signed refusal names the first it refuses and up to 30 more): beyond this, the refusal stands
MAX_WITHHOLD_RETRIES = 8


def read_tokens(tokens: Sequence[str] | None, people: int) -> list[bytes] | None:
    """Consent tokens in text form, one per person, as the binary form sealed with the identifiers; an empty cell
    or text that is not a token becomes ``b""``, which the client's own check refuses as ``CONSENT_MALFORMED``."""
    if tokens is None:
        return None
    if len(tokens) != people:
        raise PlanError(f"{len(tokens)} consent token(s) for {people} people", code="CONSENT_TOKENS_MISMATCH")
    out = []
    for text in tokens:
        try:
            out.append(consent_codec.parse_token_text(text).encode())
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


# what a client accepts in one message: an answer streams one ciphertext per message after a head of statements
# and receipts (about 1 KB per region), so a coordinator cannot make the client hold more than this at once
CLIENT_RECEIVE_BYTES = 16 * 1024 * 1024
CLIENT_CHANNEL_OPTIONS = with_options(GRPC_OPTIONS, max_receive_message_length=CLIENT_RECEIVE_BYTES)

LOOKUP_BATCH = 4550  # people per request: ten full ciphertexts of nine slots per person
SEALED_BYTES_PER_REQUEST = 3 * 1024 * 1024  # a request's sealed copies stay well under the coordinator's 4 MiB


@dataclass
class Checked:
    """What the client took from an answer once every check passed (see ``FederationClient._checked``)."""

    terms: dict[str, Any]  # the privacy terms every region signed
    runs: int  # which run of the question the regions answered
    verified: bool  # the statements were checked against a pinned catalog's keys
    slots: list[np.ndarray]  # the client's own sum of the regions' ciphertexts, decrypted, chunk by chunk
    timings: dict[str, float]


class FederationClient:
    def __init__(self, profile: ClientProfile, keys: he.ClientKeys | None = None) -> None:
        self.profile = profile
        tls = require_tls(profile.tls, profile.insecure, source="client profile")
        # dialled by its name in the federation, so only the coordinator's certificate is accepted
        self._channel = secure_channel(
            profile.coordinator, tls, server_name=coordinator_target(tls), options=CLIENT_CHANNEL_OPTIONS
        )
        self._stub = pb_grpc.CoordinatorStub(self._channel)
        self._keys = keys
        self._keys_lock = threading.Lock()
        self._catalog: Catalog | None = None
        self._signer: Signer | None = None
        self._plans = PlanCache(profile.plans) if profile.plans is not None else None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> FederationClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def keys(self) -> he.ClientKeys:
        """This client's key pair, loaded (or made) once: a screening's parallel requests share it."""
        with self._keys_lock:
            if self._keys is None:
                self._keys = he.ClientKeys.load_or_generate(self.profile.keys)
            return self._keys

    @property
    def signer(self) -> Signer:
        """The certificate and key that sign this client's questions (the profile's identity, else its TLS pair)."""
        if self._signer is None:
            source = self.profile.identity or self.profile.tls
            if source is None:
                raise ConfigError(
                    "questions must be signed, and this profile names no certificate to sign with",
                    code="AUTH_NO_IDENTITY",
                    hint="give 'tls: {ca, cert, key}' or 'identity: {cert, key}' in the profile",
                )
            self._signer = Signer.from_files(source.cert, source.key)
        return self._signer

    def sign(
        self, sql: str, *, operation: str = "query", purpose: str | None = None, consent: str | None = None
    ) -> pb.SignedEnvelope:
        """Sign one question for this federation, bound to this client's public context."""
        return self.signer.sign(
            sql=sql,
            context_digest=he.context_digest(self.keys.public_context()),
            federation=self.catalog.federation,
            operation=operation,
            purpose=self.profile.purpose if purpose is None else purpose,
            consent_ref=consent or "",
            max_runs=self.profile.max_runs,
        )

    def explain(
        self, sql: str, *, purpose: str | None = None, consent: str | None = None
    ) -> tuple[Plan, ExplainAnswer]:
        """The partial plan and every region's verdict on the question, without running it: one verdict per
        region of the catalog, each signed by that region for this question (checked against its key from a
        pinned catalog), or the coordinator's unsigned word that it got none
        (:func:`federation.trust.verdicts.check`)."""
        plan = self.plan(sql)
        signed = self.sign(sql, operation="explain", purpose=purpose, consent=consent)
        try:
            reply = self._stub.Explain(pb.ExplainRequest(envelope=signed), timeout=self.profile.timeout_s)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        qid = query_id(signed)
        if reply.query_id != qid:
            raise CryptoError("the explain is for another question", code="ANSWER_CORRUPT")
        if reply.plan_fingerprint != plan.fingerprint:
            raise PlanError(
                "the coordinator derived a different plan than this client",
                code="PLAN_MISMATCH",
                hint="the client's catalog may differ from the coordinator's",
            )
        audit_keys = self._audit_keys()
        checked = verdicts.check(
            reply.verdicts,
            query_id=qid,
            regions=self.catalog.node_ids,
            audit_keys=audit_keys,
            verify_signatures=bool(audit_keys),
        )
        return plan, ExplainAnswer(query_id=qid, verdicts=checked, verified=bool(audit_keys))

    def _receipts(self, reply: pb.QueryResponse, signed: pb.SignedEnvelope) -> tuple[list[Receipt], int]:
        """Every answering region's audit receipt, checked (:func:`check_receipt`), and how many of them were
        verified against the regions' audit keys. Nothing is kept yet: see :meth:`_keep`."""
        envelope = pb.QueryEnvelope.FromString(signed.envelope)
        receipts = [receipt_from_proto(r) for r in reply.receipts]
        if sorted(r.node_id for r in receipts) != sorted(reply.answered):
            raise CryptoError("the answer does not carry one audit receipt per region", code="ANSWER_CORRUPT")
        keys = self._audit_keys()
        who = self.signer.identity.common_name
        verified = sum(check_receipt(r, nonce=envelope.nonce, signer=who, audit_keys=keys) for r in receipts)
        return receipts, verified

    def _keep(self, receipts: Sequence[Receipt]) -> None:
        """Keep an answer's receipts in the profile's receipts file, once the whole answer passed every check:
        a receipt of an answer this client refused would later be held against a region that may have done
        nothing wrong."""
        if self.profile.receipts is not None and receipts:  # mode 0600: who asked what, and when
            lines = "".join(json.dumps(r.to_dict(), sort_keys=True) + "\n" for r in receipts)
            append_private(self.profile.receipts, lines.encode("utf-8"))

    def _checked(
        self, keys: he.ClientKeys, answer: StreamedAnswer, signed: pb.SignedEnvelope, sizes: Sequence[int]
    ) -> Checked:
        """The privacy terms every answering region signed for this run, how many runs of the question the
        regions answered (at most), whether the statements were checked against a pinned catalog's keys, and
        the client's own sum of exactly the ciphertexts the regions signed, decrypted."""
        envelope = pb.QueryEnvelope.FromString(signed.envelope)
        checked = answer.statements  # checked as the head arrived (see _streamed)
        runs = max(st.runs for st in checked)
        if runs > envelope.max_runs:
            raise CryptoError(
                "a region says it answered more runs of this question than it was signed for",
                code="ANSWER_STATEMENT_INVALID",
            )
        t_checked = time.perf_counter()
        slots = answer_check.decrypt_sum(keys, answer, sizes)
        t_summed = time.perf_counter()
        return Checked(
            terms=checked[0].privacy,
            runs=runs,
            verified=bool(self._audit_keys()),
            slots=slots,
            timings={
                "verify_ms": answer.verify_ms,  # the statements and the ciphertexts' digests, as they arrived
                "sum_decrypt_ms": (t_summed - t_checked) * 1e3,  # the client's own sum of the regions' answers
                "answer_bytes": float(sum(len(b) for blobs in answer.ciphertexts.values() for b in blobs)),
            },
        )

    def _streamed(self, call: Any, chunks: int, regions: Sequence[str], signed: pb.SignedEnvelope) -> StreamedAnswer:
        """Read a streamed answer (see :mod:`client.answer_check`), its head's statements checked before any
        ciphertext is read; the stream is cancelled on any failure."""
        audit_keys = self._audit_keys()
        check_head = answer_check.head_checker(
            audit_keys,
            query_id=query_id(signed),
            context=pb.QueryEnvelope.FromString(signed.envelope).context_digest,
            verify_signatures=bool(audit_keys),
        )
        try:
            return answer_check.read_answer(call, chunks, regions, check_head)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        finally:
            call.cancel()

    def _audit_keys(self) -> dict[str, str | None]:
        """The regions' audit keys, from a catalog this profile pins; none from one the coordinator sent, since
        the coordinator could then vouch for a region's receipts with keys of its own choosing."""
        if self.profile.catalog is None:
            return {}
        return {n.id: n.audit_key for n in self.catalog.nodes}

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
            gone = ", ".join(f"{m['node_id']} ({m['code']})" for m in _missing(reply))
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
        lookup_codec.check_consistent(grid, answered=[regions.index(r) for r in reply.answered], by_city=by_city)
        self._keep(receipts)
        t_dec = time.perf_counter()
        return LookupAnswer(
            facts=[_total(row) if len(row) > 1 else row[0] for row in grid],
            regions=regions,
            answered=list(reply.answered),
            missing=_missing(reply),
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
        verifier = consent_codec.ConsentVerifier(issuers)
        grantee = consent_codec.grantee_of(self.signer.certificate)
        refused = {}
        for place, (pid, token) in enumerate(zip(ids, tokens, strict=True)):
            code = verifier.check(token, pid, grantee=grantee, purpose=purpose, facts=facts)
            if code is not None:
                refused[place] = code
        return refused

    def kept_receipts(self) -> list[Receipt]:
        """The receipts this profile kept (empty when it keeps none); ``AUDIT_RECEIPT_MALFORMED`` names a line
        that is not one."""
        path = self.profile.receipts
        if path is None or not path.exists():
            return []
        kept = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line:
                try:
                    kept.append(Receipt.from_dict(json.loads(line)))
                except (ValueError, RecursionError):
                    raise AuditError(f"{path}: line {number} is not JSON", code="AUDIT_RECEIPT_MALFORMED") from None
                except AuditError as err:
                    raise AuditError(f"{path}: line {number}: {err.message}", code=err.code) from None
        return kept

    def check_receipt(self, receipt: Receipt) -> Checkpoint:
        """Ask the receipt's region for proofs that its entry is still in its log; the latest checkpoint if so."""
        request = pb.AuditProofRequest(node_id=receipt.node_id, index=receipt.index, old_size=receipt.checkpoint.size)
        try:
            proof = self._stub.AuditProof(request, timeout=self.profile.timeout_s)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return check_still_logged(receipt, proof, self._audit_keys().get(receipt.node_id))

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            if self.profile.catalog is not None:
                self._catalog = load_catalog(self.profile.catalog)
            else:
                try:
                    reply = self._stub.GetCatalog(pb.CatalogRequest(), timeout=self.profile.timeout_s)
                except grpc.RpcError as err:
                    raise from_rpc_error(err) from None
                # as a catalog file is read: no key twice, no nesting past a config's, no aliases blown up
                doc = parse_yaml("<coordinator catalog>", reply.catalog_yaml)
                self._catalog = parse_model("<coordinator catalog>", doc, Catalog)
        return self._catalog

    def plan(self, sql: str) -> Plan:
        """The partial plan of ``sql`` over the catalog: kept from before in the profile's plan cache, else
        derived here (a plan error is raised before anything is sent)."""
        require_text(sql, "SQL")
        if self._plans is not None:
            return self._plans.plan(sql, self.catalog)
        return derive(sql, self.catalog)

    def query(
        self, sql: str, deadline_ms: int | None = None, *, purpose: str | None = None, consent: str | None = None
    ) -> QueryAnswer:
        t0 = time.perf_counter()
        plan = self.plan(sql)  # clear errors before anything is sent
        keys = self.keys
        signed = self.sign(sql, purpose=purpose, consent=consent)
        t_plan = time.perf_counter()
        request = pb.QueryRequest(
            envelope=signed,
            public_context=keys.public_context(),
            he_format=he.HE_FORMAT,
            deadline_ms=self.profile.deadline_ms if deadline_ms is None else deadline_ms,
        )
        sizes = plan.layout.chunk_sizes
        streamed = self._streamed(
            self._stub.Query(request, timeout=self.profile.timeout_s), len(sizes), self.catalog.node_ids, signed
        )
        reply = streamed.head
        t_rpc = time.perf_counter()
        if reply.query_id != query_id(signed):
            raise CryptoError("the answer is for another question", code="ANSWER_CORRUPT")
        receipts, verified = self._receipts(reply, signed)
        if reply.plan_fingerprint != plan.fingerprint:
            raise PlanError(
                "the coordinator answered a different plan than this client derived",
                code="PLAN_MISMATCH",
                hint="the client's catalog may differ from the coordinator's",
            )
        if not reply.answered:
            raise CryptoError("the answer names no region", code="ANSWER_CORRUPT")
        accounted = sorted([*reply.answered, *(m.node_id for m in reply.missing)])
        if accounted != sorted(self.catalog.node_ids):  # a region silently left out of the sum would mislead
            raise CryptoError("the answer does not account for every region once", code="ANSWER_CORRUPT")
        got = self._checked(keys, streamed, signed, sizes)
        signed_terms, runs, checked, decrypted = got.terms, got.runs, got.verified, got.slots
        max_runs = pb.QueryEnvelope.FromString(signed.envelope).max_runs
        t_dec = time.perf_counter()
        noisy = signed_terms.get("mode") == "dp"
        totals = decode_totals(plan, decrypted, len(reply.answered), noisy=noisy)
        privacy: dict[str, Any] = {"mode": "exact"}
        suppressed = 0
        if noisy:
            terms = _dp_terms(plan, signed_terms)
            derived = dp_terms(plan, self.catalog, terms.epsilon, terms.delta, terms.threshold)
            if derived != terms:  # else the noise stated would not be the noise the regions added
                raise PlanError(
                    "the regions' DP noise is not what this client derives from the plan and its catalog",
                    code="DP_TERMS_DIFFER",
                    hint="the client's catalog may differ from the regions' (contribution, bounds)",
                )
            totals, suppressed = suppress_small_groups(plan, totals, terms.threshold)
            privacy = {
                "mode": "dp",
                "epsilon": terms.epsilon,
                "delta": terms.delta,
                "threshold": terms.threshold,
                "runs": runs,  # which run of the question this answer is, as the regions signed it
                "max_runs": max_runs,  # the signed bound: at most this many runs charged at each
                "verified": checked,  # the terms were checked against the regions' keys
                "noise": [
                    {"component": component_label(comp), "sd": noise.sd / 10**comp.scale}
                    for comp, noise in zip(plan.components, terms.components, strict=True)
                    if noise.mu > 0
                ],
            }
        from hpf.client.finish import finish  # DuckDB runs the finishing SQL: only an aggregate's answer needs it

        finished = finish(plan, totals, noisy=noisy)
        self._keep(receipts)
        t_fin = time.perf_counter()
        server = reply.timings
        timings = {
            "client_plan_ms": (t_plan - t0) * 1e3,
            "round_trip_ms": (t_rpc - t_plan) * 1e3,
            "decrypt_ms": (t_dec - t_rpc) * 1e3,
            "finish_ms": (t_fin - t_dec) * 1e3,
            "coordinator_plan_ms": server.plan_ms,
            "fanout_ms": server.fanout_ms,
            "runs": float(server.runs),
            "total_ms": (t_fin - t0) * 1e3,
            **got.timings,
        }
        return QueryAnswer(
            columns=finished.columns,
            rows=finished.rows,
            answered=list(reply.answered),
            missing=_missing(reply),
            query_id=reply.query_id,
            timings=timings,
            withheld_groups=finished.withheld_groups - (1 if suppressed and not plan.keys else 0),
            receipts=receipts,
            receipts_verified=verified,
            privacy=privacy,
            suppressed_groups=suppressed,
            never_negative=never_negative(plan, self.catalog) if noisy else {},
            statements_verified=len(reply.statements) if checked else 0,
            verified=checked,
            max_runs=max_runs,
        )
