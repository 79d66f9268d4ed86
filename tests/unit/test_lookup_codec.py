"""Person-lookup facts <-> slots: any in-range facts of up to 256 regions sum (as the coordinator's homomorphic
sum does, modulo the plain modulus) and decode to the exact federation-wide facts; figures that do not fit are
reported as failed, never as wrong numbers."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from examples import budget
from hypothesis import given, settings
from hypothesis import strategies as st

from hpf.federation.crypto.he import HALF_PLAIN, PLAIN_MODULUS, SLOTS
from hpf.federation.crypto.limb_codec import MAX_REGIONS
from hpf.federation.crypto.lookup_codec import (
    FACT_COLUMNS,
    FLAGS,
    LOANS_MAX,
    MAX_CELLS_SLOTS,
    MONEY,
    MONEY_MAX,
    MONEY_MIN,
    MONTHS_MAX,
    SLOTS_PER_CELL,
    PersonFacts,
    chunk_sizes,
    decode_facts,
    encode_facts,
    facts_asked,
    fields_of,
    layout_fingerprint,
    slot_count,
)
from hpf.federation.errors import FederationError

COL = {name: i for i, name in enumerate(FACT_COLUMNS)}
FIGURES = ("contribution_months", "active_loans", "overdue_loans", *MONEY)
Facts = npt.NDArray[np.int64]


def homomorphic_sum(vectors: list[Facts]) -> Facts:
    """What the client decrypts from the coordinator's sum: slot sums modulo the plain modulus, centred."""
    total = [sum(int(v[i]) for v in vectors) for i in range(len(vectors[0]))]
    assert all(-HALF_PLAIN < s < HALF_PLAIN for s in total), "a slot sum wraps the plain modulus"
    centred = [s % PLAIN_MODULUS for s in total]
    return np.array([s - PLAIN_MODULUS if s > HALF_PLAIN else s for s in centred], dtype=np.int64)


def expected(regions: list[Facts], person: int) -> PersonFacts:
    """The exact federation-wide facts of one person, summed here in Python integers."""
    sums = {name: sum(int(r[person, COL[name]]) for r in regions) for name in FACT_COLUMNS}
    return PersonFacts(**{n: sums[n] for n in FACT_COLUMNS if n != "failed"}, failed_regions=0)


def random_facts(rng: np.random.Generator, subjects: int, mode: str) -> Facts:
    """One region's in-range facts for ``subjects`` people; ``mode`` pushes every figure to an extreme."""
    f = np.zeros((subjects, len(FACT_COLUMNS)), dtype=np.int64)
    for name in FLAGS:
        f[:, COL[name]] = rng.integers(0, 2, subjects)
    bounds = {"contribution_months": (0, MONTHS_MAX - 1), "active_loans": (0, LOANS_MAX - 1)}
    bounds |= {"overdue_loans": (0, LOANS_MAX - 1)} | {m: (MONEY_MIN, MONEY_MAX) for m in MONEY}
    for name, (low, high) in bounds.items():
        if mode == "max":
            f[:, COL[name]] = high
        elif mode == "min":
            f[:, COL[name]] = low
        elif mode == "edges":
            f[:, COL[name]] = rng.choice([low, high, 0, 1, -1 if low < 0 else 0], subjects)
        else:
            f[:, COL[name]] = rng.integers(low, high, subjects, endpoint=True)
    if mode in ("max", "min"):
        f[:, [COL[name] for name in FLAGS]] = 1 if mode == "max" else 0
    return f


@settings(max_examples=budget(60), deadline=None)
@given(
    regions=st.integers(1, MAX_REGIONS),
    subjects=st.integers(1, 3),
    mode=st.sampled_from(["uniform", "max", "min", "edges"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_in_range_facts_of_up_to_256_regions_sum_to_the_exact_totals(
    regions: int, subjects: int, mode: str, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    facts = [random_facts(rng, subjects, mode) for _ in range(regions)]
    slots = homomorphic_sum([encode_facts(f, cells=1, cell=0) for f in facts])
    decoded = decode_facts(slots, subjects=subjects, cells=1)
    assert [row[0] for row in decoded] == [expected(facts, p) for p in range(subjects)]


fact_rows = st.tuples(
    *[st.integers(0, 1)] * len(FLAGS),
    st.integers(0, MONTHS_MAX - 1),
    st.just(0),  # failed
    st.integers(0, LOANS_MAX - 1),
    st.integers(0, LOANS_MAX - 1),
    *[st.integers(MONEY_MIN, MONEY_MAX)] * len(MONEY),
)


@settings(max_examples=budget(100), deadline=None)
@given(st.lists(st.lists(fact_rows, min_size=2, max_size=2), min_size=1, max_size=6))
def test_drawn_facts_sum_exactly_including_negative_money(regions: list[list[tuple[int, ...]]]) -> None:
    facts = [np.array(r, dtype=np.int64) for r in regions]
    slots = homomorphic_sum([encode_facts(f, cells=1, cell=0) for f in facts])
    decoded = decode_facts(slots, subjects=2, cells=1)
    assert [row[0] for row in decoded] == [expected(facts, 0), expected(facts, 1)]


@settings(max_examples=budget(30), deadline=None)
@given(regions=st.integers(1, 8), subjects=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_a_breakdown_keeps_each_region_in_its_own_cell(regions: int, subjects: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    facts = [random_facts(rng, subjects, "uniform") for _ in range(regions)]
    slots = homomorphic_sum([encode_facts(f, cells=regions, cell=i) for i, f in enumerate(facts)])
    decoded = decode_facts(slots, subjects=subjects, cells=regions)
    for person in range(subjects):
        assert decoded[person] == [expected([f], person) for f in facts]


def in_range(subjects: int) -> Facts:
    f = np.zeros((subjects, len(FACT_COLUMNS)), dtype=np.int64)
    f[:, [COL[n] for n in FLAGS]] = 1
    f[:, COL["contribution_months"]] = 12
    f[:, COL["active_loans"]] = 1
    for i, name in enumerate(MONEY):
        f[:, COL[name]] = -(10**6) * (i + 1)
    return f


OUT_OF_RANGE = [
    ("contribution_months", MONTHS_MAX),
    ("contribution_months", -1),
    ("active_loans", LOANS_MAX),
    ("overdue_loans", -1),
    ("contribution_fen", MONEY_MAX + 1),
    ("balance_fen", MONEY_MIN - 1),
    ("outstanding_fen", MONEY_MAX + 1),
    ("failed", 1),  # the region itself found a sum it cannot carry
]


@pytest.mark.parametrize(("column", "value"), OUT_OF_RANGE)
def test_figures_that_do_not_fit_are_failed_not_wrong(column: str, value: int) -> None:
    regions = [in_range(2) for _ in range(3)]
    regions[1][0, COL[column]] = value  # region 1's figures about person 0 do not fit
    slots = homomorphic_sum([encode_facts(f, cells=1, cell=0) for f in regions])
    person0, person1 = (row[0] for row in decode_facts(slots, subjects=2, cells=1))
    assert person0.failed_regions == 1
    assert all(person0[name] is None for name in FIGURES)
    assert (person0.cities, person0.cities_active, person0.cities_sealed, person0.loan_cities) == (3, 3, 3, 3)
    assert person1 == expected(regions, 1)  # the other person's figures are untouched


def test_flags_that_are_not_0_or_1_are_dropped_with_the_figures() -> None:
    regions = [in_range(1) for _ in range(3)]
    regions[2][0, COL["loan_cities"]] = 2
    slots = homomorphic_sum([encode_facts(f, cells=1, cell=0) for f in regions])
    [[person]] = decode_facts(slots, subjects=1, cells=1)
    assert person.failed_regions == 1 and person.contribution_months is None
    assert (person.cities, person.loan_cities) == (2, 2)  # region 2's flags are not counted


def test_every_region_failing_is_counted() -> None:
    regions = [in_range(1) for _ in range(MAX_REGIONS)]
    for f in regions:
        f[0, COL["balance_fen"]] = MONEY_MAX + 1
    slots = homomorphic_sum([encode_facts(f, cells=1, cell=0) for f in regions])
    [[person]] = decode_facts(slots, subjects=1, cells=1)
    assert person.failed_regions == MAX_REGIONS and person.cities == MAX_REGIONS and person.balance_fen is None


def test_duplicate_loans_means_open_loans_in_two_cities() -> None:
    base = expected([in_range(1)], 0)
    assert not base.duplicate_loans
    two = expected([in_range(1), in_range(1)], 0)
    assert two.loan_cities == 2 and two.duplicate_loans
    assert two.as_dict()["loan_cities"] == 2 and two["balance_fen"] == -4 * 10**6


@pytest.mark.parametrize(
    ("subjects", "cells", "sizes"),
    [
        (1, 1, [9]),
        (455, 1, [4095]),
        (456, 1, [SLOTS, 8]),
        (1000, 1, [SLOTS, SLOTS, 808]),
        (10, 41, [3690]),
        (4550, 1, [SLOTS] * 9 + [4086]),
    ],
)
def test_chunk_sizes(subjects: int, cells: int, sizes: list[int]) -> None:
    assert chunk_sizes(subjects, cells) == sizes
    assert sum(sizes) == slot_count(subjects, cells) == subjects * cells * SLOTS_PER_CELL


@settings(max_examples=budget(200), deadline=None)
@given(subjects=st.integers(1, 150_000), cells=st.integers(1, 41))  # at most 55M slots
def test_chunks_cover_the_layout_in_full_ciphertexts(subjects: int, cells: int) -> None:
    sizes = chunk_sizes(subjects, cells)
    assert sum(sizes) == slot_count(subjects, cells)
    assert all(s == SLOTS for s in sizes[:-1]) and 0 < sizes[-1] <= SLOTS


def test_layouts_too_small_or_too_large_are_refused() -> None:
    largest = MAX_CELLS_SLOTS // SLOTS_PER_CELL
    assert sum(chunk_sizes(largest, 1)) == largest * SLOTS_PER_CELL
    for subjects, cells in ((0, 1), (1, 0), (largest + 1, 1), (largest, 2)):
        with pytest.raises(FederationError) as info:
            chunk_sizes(subjects, cells)
        assert info.value.code == "LOOKUP_TOO_LARGE"


def test_layout_fingerprint_names_subjects_and_cells() -> None:
    prints = {layout_fingerprint(s, c) for s in (1, 4, 41) for c in (1, 4, 41)}
    assert len(prints) == 9
    assert layout_fingerprint(1, 4) != layout_fingerprint(4, 1)


def test_facts_or_answers_of_the_wrong_shape_are_refused() -> None:
    bad_calls: dict[str, list[Callable[[], object]]] = {
        "LOOKUP_LAYOUT": [
            lambda: encode_facts(np.zeros((2, len(FACT_COLUMNS) - 1), dtype=np.int64), cells=1, cell=0),
            lambda: encode_facts(in_range(2), cells=3, cell=3),
            lambda: encode_facts(in_range(2), cells=3, cell=-1),
        ],
        "CIPHERTEXT_SHAPE": [
            lambda: decode_facts(np.zeros(17, dtype=np.int64), subjects=2, cells=1),
            lambda: decode_facts(np.zeros(18, dtype=np.int64), subjects=1, cells=1),
        ],
        "ANSWER_CORRUPT": [
            lambda: decode_facts(np.full(9, 1 << 39, dtype=np.int64), subjects=1, cells=1),
            lambda: decode_facts(np.full(9, -(1 << 38) - 1, dtype=np.int64), subjects=1, cells=1),
        ],
    }
    for code, calls in bad_calls.items():
        for call in calls:
            with pytest.raises(FederationError) as info:
                call()
            assert info.value.code == code


# -------------------------------------------------------------------------- the facts asked for

BANK = ("duplicate_loans", "loan_cities")


def test_a_bank_answer_carries_no_balance_slot_and_nothing_of_the_balance() -> None:
    """With the facts a loan review needs, a person's cell is the flags and status slots only, and two regions
    whose rows differ only in balance, contributions and loans' amounts send exactly the same slots."""
    rng = np.random.default_rng(3)
    rows = random_facts(rng, 5, "uniform")
    other = rows.copy()
    for name in ("balance_fen", "contribution_fen", "outstanding_fen", "contribution_months", "active_loans"):
        other[:, COL[name]] = rng.integers(0, 1000, 5)
    assert np.array_equal(
        encode_facts(rows, cells=1, cell=0, facts=BANK), encode_facts(other, cells=1, cell=0, facts=BANK)
    )
    assert slot_count(5, 1, BANK) == 5 * 2
    [[person], *_] = decode_facts(encode_facts(rows, cells=1, cell=0, facts=BANK), subjects=5, cells=1, facts=BANK)
    assert person.loan_cities == rows[0, COL["loan_cities"]]
    assert (person.balance_fen, person.contribution_fen, person.outstanding_fen, person.cities) == (None,) * 4


@pytest.mark.parametrize("facts", [("balance",), ("contributions", "accounts"), ("loans", "loan_cities"), BANK])
def test_every_fact_set_sums_exactly(facts: tuple[str, ...]) -> None:
    rng = np.random.default_rng(7)
    regions = [random_facts(rng, 3, "uniform") for _ in range(4)]
    slots = homomorphic_sum([encode_facts(f, cells=1, cell=0, facts=facts) for f in regions])
    decoded = decode_facts(slots, subjects=3, cells=1, facts=facts)
    for person in range(3):
        full = expected(regions, person)
        kept = fields_of(facts)
        for name in PersonFacts.__dataclass_fields__:
            if name != "failed_regions":
                assert decoded[person][0][name] == (full[name] if name in kept else None), name


def test_the_layout_fingerprint_covers_the_facts() -> None:
    """Regions agree on a layout only when they lay out the same facts: the fingerprint names them (in one order,
    whatever order they were asked in), and a lookup naming no facts asks for every one."""
    assert layout_fingerprint(2, 1, BANK) == layout_fingerprint(2, 1, tuple(reversed(BANK)))
    assert layout_fingerprint(2, 1, BANK) != layout_fingerprint(2, 1, (*BANK, "balance"))
    assert layout_fingerprint(2, 1) == layout_fingerprint(2, 1, facts_asked([]))
    with pytest.raises(FederationError) as err:
        facts_asked(["balance", "salary"])
    assert err.value.code == "LOOKUP_MALFORMED"
