"""The client's checks of a streamed answer (client.answer_check) and of a lookup's facts (lookup_codec)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import numpy as np
import pytest

from hpf.client.answer_check import head_checker, read_answer
from hpf.federation.crypto.he import MAX_CIPHERTEXT_BYTES
from hpf.federation.crypto.lookup_codec import FACT_COLUMNS, decode_facts, encode_facts
from hpf.federation.crypto.lookup_consistency import check_consistent
from hpf.federation.errors import CryptoError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.trust import statements

REGIONS = ["a", "b", "c"]


def _statement(node: str, blobs: list[bytes]) -> pb.AnswerStatement:
    body = statements.Statement(
        node=node,
        query_id="q",
        run="r",
        participants=tuple(REGIONS),
        context="c",
        ciphertexts=statements.ciphertexts_digest(blobs),
        privacy={"mode": "exact"},
    )
    return pb.AnswerStatement(node_id=node, statement=body.encode(), signature=bytes(64))


UNSIGNED = head_checker({}, query_id="q", context="c", verify_signatures=False)  # the stream's form, not the keys


def _parts(answered: list[str], chunks: int) -> list[pb.AnswerPart]:
    blobs = {n: [f"{n}{c}".encode() for c in range(chunks)] for n in dict.fromkeys(answered)}
    signed = [_statement(n, blobs[n]) for n in answered]
    head = pb.AnswerPart(head=pb.QueryResponse(query_id="q", answered=answered, statements=signed))
    return [head] + [
        pb.AnswerPart(ciphertext=pb.RegionCiphertext(node_id=n, chunk=c, ciphertext=blobs[n][c]))
        for n in answered
        for c in range(chunks)
    ]


def test_an_answer_in_order_is_read_whole() -> None:
    got = read_answer(_parts(REGIONS, 2), 2, REGIONS, UNSIGNED)
    assert list(got.head.answered) == REGIONS
    assert got.ciphertexts == {n: [f"{n}0".encode(), f"{n}1".encode()] for n in REGIONS}


BROKEN = {
    "empty": lambda p: [],
    "head last": lambda p: [*p[1:], p[0]],
    "two heads": lambda p: [p[0], p[0], *p[1:]],
    "a chunk missing": lambda p: p[:-1],
    "a chunk more": lambda p: [*p, p[-1]],
    "chunks swapped": lambda p: [p[0], p[2], p[1], *p[3:]],
    "regions interleaved": lambda p: [p[0], p[1], p[3], p[2], *p[4:]],
}


@pytest.mark.parametrize("how", list(BROKEN))
def test_an_answer_out_of_order_is_refused(how: str) -> None:
    with pytest.raises(CryptoError) as info:
        read_answer(BROKEN[how](_parts(REGIONS, 2)), 2, REGIONS, UNSIGNED)
    assert info.value.code == "ANSWER_CORRUPT"


@pytest.mark.parametrize("answered", [["a", "a", "b"], ["a", "x"]])
def test_a_head_naming_a_region_twice_or_one_not_asked_is_refused(answered: list[str]) -> None:
    with pytest.raises(CryptoError) as info:
        read_answer(_parts(answered, 1), 1, REGIONS, UNSIGNED)
    assert info.value.code == "ANSWER_CORRUPT"


def test_an_oversized_ciphertext_is_refused_as_it_arrives() -> None:
    parts = _parts(REGIONS, 1)
    parts[2].ciphertext.ciphertext = bytes(MAX_CIPHERTEXT_BYTES + 1)
    with pytest.raises(CryptoError) as info:
        read_answer(parts, 1, REGIONS, UNSIGNED)
    assert info.value.code == "CIPHERTEXT_TOO_LARGE"


def test_a_region_whose_ciphertexts_are_not_the_signed_ones_is_refused_before_the_next_is_read() -> None:
    parts = _parts(REGIONS, 2)
    parts[1].ciphertext.ciphertext = b"other bytes"
    read = []

    def counted() -> Iterator[pb.AnswerPart]:
        for i, part in enumerate(parts):
            read.append(i)
            yield part

    with pytest.raises(CryptoError) as info:
        read_answer(counted(), 2, REGIONS, UNSIGNED)
    assert info.value.code == "ANSWER_CIPHERTEXT_MISMATCH" and read == [0, 1, 2]  # a's two chunks, no more


def test_a_head_without_a_statement_for_a_region_is_refused_before_any_ciphertext() -> None:
    parts = _parts(REGIONS, 1)
    del parts[0].head.statements[1]
    with pytest.raises(CryptoError) as info:
        read_answer(parts, 1, REGIONS, UNSIGNED)
    assert info.value.code == "ANSWER_STATEMENT_INVALID"


def test_an_endless_stream_is_read_no_further_than_the_layout() -> None:
    read: list[int] = []

    def endless() -> Iterator[pb.AnswerPart]:
        yield from _parts(REGIONS, 1)
        for i in itertools.count():
            read.append(i)
            yield _parts(["a"], 1)[1]

    with pytest.raises(CryptoError):
        read_answer(endless(), 1, REGIONS, UNSIGNED)
    assert read == [0]


# ------------------------------------------------------------------------------- a lookup's facts


def _region_facts(rng: random.Random, people: int) -> np.ndarray:
    """One region's honest facts, per person, as its facts query would give them."""
    rows = []
    for _ in range(people):
        account = rng.random() < 0.6
        active = account and rng.random() < 0.7
        sealed = account and rng.random() < 0.4
        active_loans, overdue = (rng.randrange(3), rng.randrange(2)) if rng.random() < 0.3 else (0, 0)
        months = rng.randrange(200) if rng.random() < 0.7 else 0
        rows.append(
            {
                "cities": int(account),
                "cities_active": int(active),
                "cities_sealed": int(sealed),
                "loan_cities": int(active_loans + overdue > 0),
                "contribution_months": months,
                "failed": 0,
                "active_loans": active_loans,
                "overdue_loans": overdue,
                "contribution_fen": rng.randrange(1, 10**9) if months else 0,
                "balance_fen": rng.randrange(-(10**6), 10**9) if account else 0,
                "outstanding_fen": rng.randrange(10**9) if active_loans + overdue else 0,
            }
        )
    return np.array([[r[c] for c in FACT_COLUMNS] for r in rows], dtype=np.int64)


@pytest.mark.parametrize("seed", range(20))
def test_every_sum_of_honest_regions_is_consistent(seed: int) -> None:
    rng = random.Random(seed)
    regions, people = rng.randrange(1, 9), 50
    slots = sum(encode_facts(_region_facts(rng, people), cells=1, cell=0) for _ in range(regions))
    check_consistent(decode_facts(slots, subjects=people, cells=1), answered=list(range(regions)), by_city=False)
    by_city = np.zeros(people * regions * 9, dtype=np.int64)
    for cell in range(regions):
        by_city += encode_facts(_region_facts(rng, people), cells=regions, cell=cell)
    grid = decode_facts(by_city, subjects=people, cells=regions)
    check_consistent(grid, answered=list(range(regions)), by_city=True)


def test_a_masked_sum_that_does_not_cancel_is_inconsistent() -> None:
    """Slots that are not a sum of regions' answers (masks that did not cancel: uniform values) almost never pass."""
    rng = np.random.default_rng(3)
    passed = 0
    for _ in range(200):
        slots = rng.integers(0, 1 << 38, size=9, dtype=np.int64)
        try:
            check_consistent(decode_facts(slots, subjects=1, cells=1), answered=[0, 1, 2, 3], by_city=False)
            passed += 1
        except CryptoError as err:
            assert err.code == "ANSWER_INCONSISTENT"
    assert passed == 0


def test_a_loan_added_without_its_loans_is_inconsistent() -> None:
    """The red team's flip (two cities with an open loan, added to a person without one) contradicts the loans
    counted, so even a sum that passed every other check would not be shown."""
    row = dict.fromkeys(FACT_COLUMNS, 0) | {"cities": 1, "cities_active": 1, "balance_fen": 5_000}
    honest = encode_facts(np.array([[row[c] for c in FACT_COLUMNS]], dtype=np.int64), cells=1, cell=0)
    check_consistent(decode_facts(honest, subjects=1, cells=1), answered=[0, 1], by_city=False)
    flipped = honest.copy()
    flipped[0] += 2 << 27  # loan_cities sits at bit 27 of the first slot
    grid = decode_facts(flipped, subjects=1, cells=1)
    assert grid[0][0].duplicate_loans and grid[0][0].active_loans == 0
    with pytest.raises(CryptoError) as info:
        check_consistent(grid, answered=[0, 1], by_city=False)
    assert info.value.code == "ANSWER_INCONSISTENT"


def test_in_a_breakdown_a_region_that_did_not_answer_has_no_figures() -> None:
    rng = random.Random(5)
    slots = encode_facts(_region_facts(rng, 4), cells=3, cell=0) + encode_facts(_region_facts(rng, 4), cells=3, cell=2)
    grid = decode_facts(slots, subjects=4, cells=3)
    check_consistent(grid, answered=[0, 2], by_city=True)
    with pytest.raises(CryptoError):
        check_consistent(grid, answered=[0, 1], by_city=True)


def test_a_head_whose_statements_fail_their_check_is_refused_before_any_ciphertext() -> None:
    """A coordinator that rewrote the statements' digests to match ciphertexts of its own: the client checks the
    statements' signatures as the head arrives, so it reads none of those ciphertexts."""
    read: list[int] = []

    def counted() -> Iterator[pb.AnswerPart]:
        for i, part in enumerate(_parts(REGIONS, 2)):
            read.append(i)
            yield part

    def refuse(head: pb.QueryResponse) -> list[statements.Statement]:
        raise CryptoError("forged", code="ANSWER_STATEMENT_INVALID")

    with pytest.raises(CryptoError) as info:
        read_answer(counted(), 2, REGIONS, refuse)
    assert info.value.code == "ANSWER_STATEMENT_INVALID" and read == [0]
