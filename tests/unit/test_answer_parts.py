"""A streamed answer at the federation's largest size: no message grows with the number of regions."""

from __future__ import annotations

import json
import os

from hpf.client.answer_check import head_checker, read_answer
from hpf.coordinator.outcome import FederatedAnswer
from hpf.coordinator.server import answer_parts
from hpf.federation.crypto.he import MAX_CIPHERTEXT_BYTES
from hpf.federation.crypto.limb_codec import MAX_REGIONS
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.trust import statements
from hpf.federation.trust.tls import MAX_MESSAGE_BYTES

HEAD_LIMIT = 4 * 1024 * 1024  # far under the client's receive limit: the head is statements and receipts only


def _answer(regions: int, chunks: int, ciphertext_bytes: int, largest: int = 0) -> FederatedAnswer:
    names = [f"r{i:03d}" for i in range(regions)]
    blobs = {n: [os.urandom(ciphertext_bytes) for _ in range(chunks)] for n in names}
    blobs[names[-1]][-1] = os.urandom(largest or ciphertext_bytes)
    entry = json.dumps({"node": "r000", "query": "q" * 64, "nonce": "ab" * 16, "ciphertext": "cd" * 32}).encode()
    checkpoint = pb.AuditCheckpoint(node_id="r000", size=10**9, root=bytes(32), time="2026-12-06T00:00:00Z")
    checkpoint.signature = bytes(64)
    receipts = [pb.AuditReceipt(node_id=n, index=10**9, entry=entry * 2, checkpoint=checkpoint) for n in names]
    signed = [
        pb.AnswerStatement(
            node_id=n,
            statement=statements.Statement(
                node=n,
                query_id="ab" * 16,
                run="cd" * 32,
                participants=tuple(names),
                context="ef" * 32,
                ciphertexts=statements.ciphertexts_digest(blobs[n]),
                privacy={"mode": "exact"},
            ).encode(),
            signature=bytes(64),
        )
        for n in names
    ]
    return FederatedAnswer(
        query_id="ab" * 16,
        fingerprint="f" * 64,
        ciphertexts=blobs,
        answered=names,
        missing=[],
        timings={"plan_ms": 1.0, "fanout_ms": 2.0},
        receipts=receipts,
        statements=signed,
    )


def test_at_256_regions_every_message_stays_within_the_limits() -> None:
    """256 regions, each statement naming all 256 participants: the head stays small, and each later message
    holds one ciphertext of at most the largest size a party accepts."""
    assert MAX_REGIONS == 256
    # a degree-4096 ciphertext is about 88 KB; one of them is the largest any party accepts
    answer = _answer(MAX_REGIONS, 2, 100_000, largest=MAX_CIPHERTEXT_BYTES)
    parts = list(answer_parts(answer))
    assert len(parts) == 1 + MAX_REGIONS * 2
    head, rest = parts[0], parts[1:]
    assert head.HasField("head") and head.ByteSize() < HEAD_LIMIT, head.ByteSize()
    assert max(p.ByteSize() for p in rest) <= MAX_CIPHERTEXT_BYTES + 64 < MAX_MESSAGE_BYTES
    unsigned = head_checker({}, query_id=answer.query_id, context="ef" * 32, verify_signatures=False)
    read = read_answer(parts, 2, answer.answered, unsigned)
    assert read.ciphertexts == answer.ciphertexts
