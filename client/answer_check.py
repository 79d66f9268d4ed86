"""What a client checks of a streamed answer before it trusts a number of it.

The coordinator relays; it does not vouch. An answer arrives as a head (who answered, who is missing, each
answering region's signed statement and audit receipt) followed by each answering region's ciphertexts, one per
message, in the head's order of regions and each region's chunks in slot order. The client:

1. reads the stream strictly in that order, and no further than the layout allows (:func:`read_answer`), so a
   coordinator can neither slip in an extra ciphertext nor make the client read without end;
2. checks, as soon as the head arrives, every answering region's statement: one run of this question, under this
   client's key, with exactly the regions that answered as participants, signed by the region's audit key from a
   pinned catalog (:func:`head_checker`, :func:`federation.trust.statements.verify`);
3. checks each region's ciphertexts against the digest that region signed as soon as they arrive, so one added
   to, replaced, reordered or taken from another question or run is refused;
4. adds the ciphertexts itself and decrypts the sum (:meth:`federation.crypto.he.ClientKeys.decrypt_sum`).

The pairwise masks still hide each region's partial from the client: one region's ciphertext decrypts to noise;
only the sum over the whole participant set is a number.

Without a pinned catalog the keys that would check the statements come from the coordinator itself, so every
check but the signatures is still made and the answer says it is *unverified*.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hpf.federation.crypto import he
from hpf.federation.errors import CryptoError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.trust import statements
from hpf.federation.trust.statements import Statement


def _corrupt(message: str) -> CryptoError:
    return CryptoError(message, code="ANSWER_CORRUPT", hint="the coordinator or a region is misbehaving")


@dataclass
class StreamedAnswer:
    """An answer as read off the stream: the head, and each answering region's ciphertexts."""

    head: pb.QueryResponse
    ciphertexts: dict[str, list[bytes]]
    statements: list[Statement]  # each answering region's statement, as checked
    verify_ms: float = 0.0  # time spent checking the statements and the ciphertexts' digests


def read_answer(
    parts: Iterable[pb.AnswerPart],
    chunks: int,
    regions: Iterable[str],
    check_head: Callable[[pb.QueryResponse], list[Statement]],
) -> StreamedAnswer:
    """The head, then exactly ``chunks`` ciphertexts of each answering region, in order.

    ``regions`` are those the client asked: an answer naming another, or one twice, is refused before any
    ciphertext is read, no more ciphertexts are read than those regions can send, and none larger than any
    party accepts. ``check_head`` checks the head's statements (the client's: signatures against the pinned
    catalog's keys, see :func:`head_checker`) before any ciphertext is read; each region's ciphertexts are then
    held against the digest its checked statement names as soon as the last of them arrives, so a coordinator
    that sends other bytes is refused after one region's worth of them.
    """
    stream = iter(parts)
    first = next(stream, None)
    if first is None or first.WhichOneof("part") != "head":
        raise _corrupt("the answer does not begin with its head")
    head = first.head
    answered = list(head.answered)
    asked = set(regions)
    if len(set(answered)) != len(answered) or not set(answered) <= asked:
        raise _corrupt("the answer names a region twice, or one that was not asked")
    t0 = time.perf_counter()
    checked = check_head(head)
    digests = {st.node: st.ciphertexts for st in checked}
    checking = time.perf_counter() - t0  # the statements, then each region's digest: the cost of verifying
    expected = [(node_id, chunk) for node_id in answered for chunk in range(chunks)]
    blobs: dict[str, list[bytes]] = {node_id: [] for node_id in answered}
    received = 0
    for part in stream:
        if part.WhichOneof("part") != "ciphertext" or received >= len(expected):
            raise _corrupt("the answer carries more than one ciphertext per chunk of each region that answered")
        c = part.ciphertext
        if len(c.ciphertext) > he.MAX_CIPHERTEXT_BYTES:
            raise CryptoError("a ciphertext in the answer is too large", code="CIPHERTEXT_TOO_LARGE")
        if (c.node_id, c.chunk) != expected[received]:
            raise _corrupt("the answer's ciphertexts are not in the order of its regions and their chunks")
        blobs[c.node_id].append(c.ciphertext)
        received += 1
        if c.chunk == chunks - 1:
            t0 = time.perf_counter()
            if statements.ciphertexts_digest(blobs[c.node_id]) != digests[c.node_id]:
                raise CryptoError(
                    f"region {c.node_id}'s ciphertexts are not the ones it signed: altered on the way",
                    code="ANSWER_CIPHERTEXT_MISMATCH",
                    hint="the coordinator is misbehaving; ask again, and tell the federation operator if it repeats",
                )
            checking += time.perf_counter() - t0
    if received != len(expected):
        raise _corrupt("the answer is missing ciphertexts of a region it says answered")
    return StreamedAnswer(head=head, ciphertexts=blobs, statements=checked, verify_ms=checking * 1e3)


def head_checker(
    audit_keys: Mapping[str, str | None], *, query_id: str, context: str, verify_signatures: bool
) -> Callable[[pb.QueryResponse], list[Statement]]:
    """The client's check of an answer's head: for this question, and every answering region's statement for one
    run of it under this client's key (signatures checked against ``audit_keys`` when ``verify_signatures``)."""

    def check(head: pb.QueryResponse) -> list[Statement]:
        if head.query_id != query_id:
            raise _corrupt("the answer is for another question")
        return statements.verify(
            head.statements,
            audit_keys,
            query_id=query_id,
            context=context,
            answered=list(head.answered),
            check_signatures=verify_signatures,
        )

    return check


def decrypt_sum(keys: he.ClientKeys, answer: StreamedAnswer, chunk_sizes: Sequence[int]) -> list[np.ndarray]:
    """The client's own sum of the answering regions' (checked) ciphertexts, decrypted chunk by chunk."""
    return keys.decrypt_sum([answer.ciphertexts[n] for n in answer.head.answered], chunk_sizes)
