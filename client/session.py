"""What every call of the client library shares: the channel to the coordinator, the key pair, the signer, the
catalog, and the checks of a streamed answer, its statements and its audit receipts.

The BFV secret key stays in this process and the profile's key file; only the public context is sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Self

import grpc
import numpy as np

from hpf.client import answer_check
from hpf.client.answer_check import StreamedAnswer
from hpf.client.coordinator_calls import AnswerStream, CoordinatorTransport, streamed, unary
from hpf.client.plan_cache import PlanCache
from hpf.client.profile import ClientProfile
from hpf.federation.audit.proto import check_receipt, check_still_logged_or_lost, receipt_from_proto
from hpf.federation.audit.records import Checkpoint, Receipt
from hpf.federation.audit.restore_proof import LostInBreak
from hpf.federation.catalog import Catalog, load_catalog
from hpf.federation.config_files import parse_model, parse_yaml
from hpf.federation.crypto import he
from hpf.federation.errors import AuditError, ConfigError, CryptoError, is_code, printable
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.generated import hpf_federation_pb2_grpc as pb_grpc
from hpf.federation.private_files import append_private
from hpf.federation.trust.channels import coordinator_target, secure_channel
from hpf.federation.trust.envelope import Signer, query_id
from hpf.federation.trust.tls import GRPC_OPTIONS, require_tls, with_options


def missing_regions(reply: pb.QueryResponse) -> list[dict[str, str]]:
    """The regions the coordinator says are missing, and why, fit to print: a code of the stable form (else the
    answer is refused) and a message without control or format characters."""
    if not all(is_code(m.code) for m in reply.missing):
        raise CryptoError("the answer names a missing region with a malformed code", code="ANSWER_CORRUPT")
    return [{"node_id": m.node_id, "code": m.code, "message": printable(m.message)} for m in reply.missing]


# what a client accepts in one message: an answer streams one ciphertext per message after a head of statements
# and receipts (about 1 KB per region), so a coordinator cannot make the client hold more than this at once
CLIENT_RECEIVE_BYTES = 16 * 1024 * 1024
CLIENT_CHANNEL_OPTIONS = with_options(GRPC_OPTIONS, max_receive_message_length=CLIENT_RECEIVE_BYTES)


def coordinator_channel(profile: ClientProfile) -> grpc.Channel:
    """A channel to the profile's coordinator, dialled by its name in the federation, so that only the
    coordinator's certificate is accepted."""
    tls = require_tls(profile.tls, profile.insecure, source="client profile")
    return secure_channel(profile.coordinator, tls, server_name=coordinator_target(tls), options=CLIENT_CHANNEL_OPTIONS)


@dataclass
class Checked:
    """What the client took from an answer once every check passed (see :meth:`ClientSession._checked`)."""

    terms: dict[str, Any]  # the privacy terms every region signed
    runs: int  # which run of the question the regions answered
    verified: bool  # the statements were checked against a pinned catalog's keys
    slots: list[np.ndarray]  # the client's own sum of the regions' ciphertexts, decrypted, chunk by chunk
    timings: dict[str, float]


class ClientSession:
    """A connection to the coordinator as this profile, the base of
    :class:`client.federation_client.FederationClient`."""

    def __init__(
        self, profile: ClientProfile, keys: he.ClientKeys | None = None, *, stub: CoordinatorTransport | None = None
    ) -> None:
        """A client of the profile's coordinator, calling it on ``stub``: by default the coordinator's gRPC stub
        over a channel of this client's own (:func:`coordinator_channel`, closed by :meth:`close`); the channel
        behind a stub passed in is the caller's to close, and the caller's to secure: open it with
        :func:`coordinator_channel`, which keeps the profile's TLS and the coordinator's name check. Every answer
        is checked the same way whichever stub carried it."""
        self.profile = profile
        self._channel = coordinator_channel(profile) if stub is None else None
        self._stub: CoordinatorTransport = pb_grpc.CoordinatorStub(self._channel) if stub is None else stub
        self._keys = keys
        self._keys_lock = threading.Lock()
        self._catalog: Catalog | None = None
        self._signer: Signer | None = None
        self._plans = PlanCache(profile.plans) if profile.plans is not None else None

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()

    def __enter__(self) -> Self:
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
        self,
        sql: str,
        *,
        operation: str = "query",
        purpose: str | None = None,
        consent: str | None = None,
        lookup: pb.LookupSpec | None = None,
    ) -> pb.SignedEnvelope:
        """Sign one question (a lookup's with its ``lookup`` spec) for this federation, bound to this client's
        public context."""
        return self.signer.sign(
            sql=sql,
            context_digest=he.context_digest(self.keys.public_context()),
            federation=self.catalog.federation,
            operation=operation,
            purpose=self._purpose(purpose),
            consent_ref=consent or "",
            lookup=lookup,
            max_runs=self.profile.max_runs,
        )

    def _purpose(self, purpose: str | None) -> str:
        """The purpose a question is asked for: the one given, else the profile's."""
        return self.profile.purpose if purpose is None else purpose

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

    def _streamed(
        self,
        method: Callable[..., AnswerStream],
        request: pb.QueryRequest | pb.LookupRequest,
        chunks: int,
        regions: Sequence[str],
        signed: pb.SignedEnvelope,
    ) -> StreamedAnswer:
        """Ask with ``request`` and read the streamed answer (see :mod:`client.answer_check`), its head's
        statements checked before any ciphertext is read; the stream is cancelled once read, or on any failure."""
        audit_keys = self._audit_keys()
        check_head = answer_check.head_checker(
            audit_keys,
            query_id=query_id(signed),
            context=pb.QueryEnvelope.FromString(signed.envelope).context_digest,
            verify_signatures=bool(audit_keys),
        )
        return streamed(
            method,
            request,
            self.profile.timeout_s,
            lambda parts: answer_check.read_answer(parts, chunks, regions, check_head),
        )

    def _audit_keys(self) -> dict[str, str | None]:
        """The regions' audit keys, from a catalog this profile pins; none from one the coordinator sent, since
        the coordinator could then vouch for a region's receipts with keys of its own choosing."""
        if self.profile.catalog is None:
            return {}
        return {n.id: n.audit_key for n in self.catalog.nodes}

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

    def check_receipt(self, receipt: Receipt) -> Checkpoint | LostInBreak:
        """Ask the receipt's region for proofs that its entry is still in its log; the latest checkpoint if so, or
        the break the region declared that its entry was lost in (a host lost after the region's last backup)."""
        request = pb.AuditProofRequest(node_id=receipt.node_id, index=receipt.index, old_size=receipt.checkpoint.size)
        proof = unary(self._stub.AuditProof, request, self.profile.timeout_s)
        return check_still_logged_or_lost(receipt, proof, self._audit_keys().get(receipt.node_id))

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            if self.profile.catalog is not None:
                self._catalog = load_catalog(self.profile.catalog)
            else:
                reply = unary(self._stub.GetCatalog, pb.CatalogRequest(), self.profile.timeout_s)
                # as a catalog file is read: no key twice, no nesting past a config's, no aliases blown up
                doc = parse_yaml("<coordinator catalog>", reply.catalog_yaml)
                self._catalog = parse_model("<coordinator catalog>", doc, Catalog)
        return self._catalog
