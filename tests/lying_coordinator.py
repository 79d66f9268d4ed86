"""A compromised coordinator, for the tests that show a client catches it.

:func:`lying` patches a running federation's coordinator so that every answer it streams is first passed through
``tamper``: the coordinator really fans the question out and gets the regions' real answers, then lies about
them. The attacks here are what the coordinator is able to do: it holds the client's public context, so it can
encrypt any value and add it to a region's ciphertext; it can drop, duplicate, reorder or swap ciphertexts,
statements and receipts, and claim a region was missing; it can keep earlier answers and send them again.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import tenseal as ts

import hpf.coordinator.fanout
import hpf.coordinator.server
from hpf.coordinator.outcome import FederatedAnswer, MissingRegion
from hpf.federation.crypto import he
from hpf.federation.errors import FederationError
from hpf.federation.generated import hpf_federation_pb2 as pb

Tamper = Callable[[FederatedAnswer], FederatedAnswer]


@contextlib.contextmanager
def lying(patch: pytest.MonkeyPatch, tamper: Tamper) -> Iterator[list[FederatedAnswer]]:
    """While active, the coordinator streams ``tamper(answer)`` for every answer; yields the true answers."""
    honest = hpf.coordinator.server.answer_parts
    seen: list[FederatedAnswer] = []

    def parts(answer: FederatedAnswer) -> Iterator[pb.AnswerPart]:
        seen.append(answer)
        return honest(tamper(dataclasses.replace(answer, ciphertexts=dict(answer.ciphertexts))))

    with patch.context() as p:
        p.setattr(hpf.coordinator.server, "answer_parts", parts)
        yield seen


def _add(ctx: ts.Context, blob: bytes, slots: np.ndarray) -> bytes:
    """``blob`` plus an encryption of ``slots``: what a coordinator holding the public key can always do."""
    vec = ts.bfv_vector_from(ctx, blob) + ts.bfv_vector(ctx, slots.tolist())
    return bytes(vec.serialize())


def add_to(public_context: bytes, node: str, value: int, slot: int = 0, chunk: int = 0) -> Tamper:
    """Add ``value`` to one slot of one region's ciphertext (Enc(1000) added to a COUNT, a flag turned on)."""
    ctx = he.load_public_context(public_context)

    def tamper(a: FederatedAnswer) -> FederatedAnswer:
        blobs = list(a.ciphertexts[node])
        size = ts.bfv_vector_from(ctx, blobs[chunk]).size()
        delta = np.zeros(size, dtype=np.int64)
        delta[slot] = value
        blobs[chunk] = _add(ctx, blobs[chunk], delta)
        a.ciphertexts[node] = blobs
        return a

    return tamper


def fresh(public_context: bytes, node: str) -> Tamper:
    """Replace one region's ciphertexts with fresh encryptions of zeros of the same shape."""
    ctx = he.load_public_context(public_context)

    def tamper(a: FederatedAnswer) -> FederatedAnswer:
        sizes = [ts.bfv_vector_from(ctx, b).size() for b in a.ciphertexts[node]]
        a.ciphertexts[node] = [he.encrypt_slots(ctx, np.zeros(n, dtype=np.int64)) for n in sizes]
        return a

    return tamper


def copy_from(node: str, other: str) -> Tamper:
    """Send another region's ciphertexts as this region's."""

    def tamper(a: FederatedAnswer) -> FederatedAnswer:
        a.ciphertexts[node] = list(a.ciphertexts[other])
        return a

    return tamper


def replay_from(earlier: FederatedAnswer, node: str, *, statement: bool = False, receipt: bool = False) -> Tamper:
    """Send a region's answer to an earlier question: its ciphertexts, and optionally its statement and receipt."""

    def tamper(a: FederatedAnswer) -> FederatedAnswer:
        a.ciphertexts[node] = list(earlier.ciphertexts[node])
        i, j = a.answered.index(node), earlier.answered.index(node)
        if statement:
            a.statements = [*a.statements[:i], earlier.statements[j], *a.statements[i + 1 :]]
        if receipt:
            a.receipts = [*a.receipts[:i], earlier.receipts[j], *a.receipts[i + 1 :]]
        return a

    return tamper


def without_ciphertexts(node: str) -> Tamper:
    """Keep a region among those that answered, but send none of its ciphertexts."""

    def tamper(a: FederatedAnswer) -> FederatedAnswer:
        a.ciphertexts[node] = []
        return a

    return tamper


def called_missing(node: str) -> Tamper:
    """Leave a region out of the sum and say it was unreachable, though it answered this run."""

    def tamper(a: FederatedAnswer) -> FederatedAnswer:
        i = a.answered.index(node)
        a.answered = [n for n in a.answered if n != node]
        a.statements = [s for k, s in enumerate(a.statements) if k != i]
        a.receipts = [r for k, r in enumerate(a.receipts) if k != i]
        del a.ciphertexts[node]
        a.missing = [*a.missing, MissingRegion(node, "NODE_UNREACHABLE", "the region cannot be reached")]
        return a

    return tamper


def doubled(node: str) -> Tamper:
    """Send one region's ciphertexts twice (one more chunk each time)."""

    def tamper(a: FederatedAnswer) -> FederatedAnswer:
        a.ciphertexts[node] = [*a.ciphertexts[node], *a.ciphertexts[node]]
        return a

    return tamper


def chunks_swapped(node: str) -> Tamper:
    """Swap a region's first two chunks (each still sent under its own slot position)."""

    def tamper(a: FederatedAnswer) -> FederatedAnswer:
        blobs = list(a.ciphertexts[node])
        blobs[0], blobs[1] = blobs[1], blobs[0]
        a.ciphertexts[node] = blobs
        return a

    return tamper


def regions_reversed(a: FederatedAnswer) -> FederatedAnswer:
    """Not an attack: the regions in the opposite order, each with its own statement, receipt and ciphertexts."""
    a.answered = a.answered[::-1]
    a.statements = a.statements[::-1]
    a.receipts = a.receipts[::-1]
    return a


@contextlib.contextmanager
def lying_stream(
    patch: pytest.MonkeyPatch, transform: Callable[[list[pb.AnswerPart]], list[pb.AnswerPart]]
) -> Iterator[None]:
    """While active, the coordinator's stream itself is rewritten: parts moved, relabelled, added or dropped."""
    honest = hpf.coordinator.server.answer_parts

    def parts(answer: FederatedAnswer) -> Iterator[pb.AnswerPart]:
        return iter(transform(list(honest(answer))))

    with patch.context() as p:
        p.setattr(hpf.coordinator.server, "answer_parts", parts)
        yield


@contextlib.contextmanager
def rerunning(patch: pytest.MonkeyPatch, extra_runs: int) -> Iterator[list[str]]:
    """While active, the coordinator runs every question ``extra_runs`` more times behind the asker's back, each
    time over one region fewer (what regions accept as a re-run after a failure), and answers with the first
    run. Yields the codes of the re-runs the regions refused."""
    original = hpf.coordinator.fanout.FanOut._gather
    refused: list[str] = []

    async def gather(
        self: hpf.coordinator.fanout.FanOut,
        question: Any,
        public_context: bytes,
        deadline_ms: int,
        t0: float,
        node_ids: list[str],
        *rest: Any,
    ) -> FederatedAnswer:
        first = await original(self, question, public_context, deadline_ms, t0, node_ids, *rest)
        survivors = list(first.answered)
        for _ in range(extra_runs):
            survivors = survivors[:-1]
            try:
                await original(self, question, public_context, deadline_ms, t0, survivors, *rest)
            except FederationError as err:
                refused.append(err.code)
        return first

    with patch.context() as p:
        p.setattr(hpf.coordinator.fanout.FanOut, "_gather", gather)
        yield refused


def rewritten_refusal(refusal: bytes, **change: object) -> bytes:
    """A region's signed consent refusal with fields rewritten (its signature kept unless ``signature`` is given):
    what a coordinator relaying it can send instead. A list replaces a repeated field's values."""
    signed = pb.ConsentRefusal.FromString(refusal)
    for field, value in change.items():
        if isinstance(value, list):
            del getattr(signed, field)[:]
            getattr(signed, field).extend(value)
        else:
            setattr(signed, field, value)
    return signed.SerializeToString()
