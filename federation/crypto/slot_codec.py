"""Partial results <-> the flat slot vector (group x component x limb) a plan lays out.

Nodes call :func:`encode_partials` on the rows of ``plan.node_sql()``; the client calls
:func:`decode_totals` on the decrypted federation-wide sum. Both follow ``plan.layout`` only.

A node with a minimum group size ``k`` withholds every group it holds fewer than ``k`` rows of: it encodes
all of that group's components as 0 and its withheld mark as 1. No node sees the federation-wide count,
so the client learns per group how many regions withheld it, and never shows such a group's partial sums.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import numpy as np

from hpf.federation.crypto import masking
from hpf.federation.crypto.he import SLOTS
from hpf.federation.crypto.limb_codec import LIMB_BITS, LIMB_MASK, join_limbs, split_values
from hpf.federation.errors import CryptoError, DataError
from hpf.federation.plan import GroupKey, Plan


def _key_index(key: GroupKey) -> dict[Any, int]:
    return {v: i for i, v in enumerate(key.values)}


def cell_of(keys: Sequence[GroupKey], indexes: Sequence[dict[Any, int]], values: Sequence[Any]) -> int:
    """Mixed-radix cell number of one group: domain value, NULL or "other" per key."""
    cell = 0
    for key, index, value in zip(keys, indexes, values, strict=True):
        if value is None:
            pos = key.null_cell
        else:
            pos = index.get(value, key.other_cell)
        cell = cell * key.cells + pos
    return cell


def cell_coordinates(keys: Sequence[GroupKey], cell: int) -> list[int]:
    """Inverse of :func:`cell_of`: the per-key position of a cell number."""
    coords = []
    for key in reversed(keys):
        cell, pos = divmod(cell, key.cells)
        coords.append(pos)
    return coords[::-1]


def _as_scaled_int(value: Any, scale: int) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):  # integer results are already in units of 10**-scale (COUNT, SUM(int), sumsq)
        return value
    if isinstance(value, Decimal):
        scaled = value.scaleb(scale)
        if scaled != scaled.to_integral_value():
            raise DataError("a partial sum has more decimals than its declared scale", code="PARTIAL_SCALE")
        return int(scaled)
    raise DataError(f"a partial result has an unexpected type {type(value).__name__}", code="PARTIAL_TYPE")


def _cell_sums(plan: Plan, rows: Iterable[Sequence[Any]]) -> dict[int, list[int]]:
    """Per occupied cell, one integer per component (the withheld mark 0) from the node query's rows.

    Several rows can land in one cell ("other" takes every value outside the domain), so they add up.
    """
    n_keys = len(plan.keys)
    indexes = [_key_index(k) for k in plan.keys]
    spans, pos = [], n_keys
    for j, comp in enumerate(plan.components):
        if comp.from_sql:
            width = len(comp.sql_terms())
            spans.append((j, comp, pos, pos + width))
            pos += width
    sums: dict[int, list[int]] = {}
    for row in rows:
        cell = cell_of(plan.keys, indexes, row[:n_keys])
        acc = sums.setdefault(cell, [0] * len(plan.components))
        for j, comp, start, stop in spans:
            acc[j] += comp.combine([_as_scaled_int(v, comp.scale) for v in row[start:stop]])
    return sums


def withhold_small_cells(plan: Plan, sums: dict[int, list[int]], min_group_size: int) -> dict[int, list[int]]:
    """``sums`` with every cell of 1 to ``min_group_size - 1`` rows blanked and marked withheld.

    The rows a cell counts are its COUNT(*) and each aggregate's own count of the rows it covers (``COUNT(x)``
    of its argument: ``SUM(x) FILTER (WHERE c)`` covers only the rows where ``c`` holds): a cell is withheld
    when any of them is 1 to k-1, or any two of them differ by 1 to k-1 (else ``COUNT(*)`` less
    ``COUNT(*) FILTER (WHERE NOT c)``, or two filters a row apart, would single out the few rows between).
    A withheld cell carries 0 in every component and 1 in its withheld mark; an empty cell stays empty and
    ``min_group_size <= 1`` withholds nothing.

    >>> from hpf.federation.plan import Component
    >>> comps = (Component("count", None), Component("sum", "x", 0, 90), Component("withheld", None, 0, 2))
    >>> plan = Plan("t", None, (), comps, (), "", (), ())
    >>> withhold_small_cells(plan, {0: [2, 50, 0], 1: [3, 7, 0], 2: [0, 0, 0]}, min_group_size=3)
    {0: [0, 0, 1], 1: [3, 7, 0], 2: [0, 0, 0]}
    """
    mark = plan.withheld_index
    blank = [int(j == mark) for j in range(len(plan.components))]
    counts = [j for j, c in enumerate(plan.components) if c.kind == "count"]  # [0] is COUNT(*)

    def small(acc: list[int]) -> bool:
        values = [acc[j] for j in counts]
        return any(1 <= v < min_group_size for v in values) or any(
            1 <= abs(a - b) < min_group_size for i, a in enumerate(values) for b in values[i + 1 :]
        )

    return {cell: list(blank) if small(acc) else acc for cell, acc in sums.items()}


def encode_partials(plan: Plan, rows: Iterable[Sequence[Any]], min_group_size: int = 1) -> np.ndarray:
    """The flat slot vector of one node's partial results (range-checked limbs).

    Cells this node holds fewer than ``min_group_size`` rows of are withheld (see :func:`withhold_small_cells`).
    """
    layout = plan.layout
    sums = withhold_small_cells(plan, _cell_sums(plan, rows), min_group_size)
    flat = np.zeros(layout.total, dtype=np.int64)
    if not sums:
        return flat
    cells = np.fromiter(sums.keys(), dtype=np.int64)
    for j, comp in enumerate(plan.components):
        limbs = split_values([acc[j] for acc in sums.values()], comp.bits)
        base = cells * layout.width + layout.offsets[j]
        for limb in range(comp.limbs):
            flat[base + limb] = limbs[:, limb]
    return flat


def encode_noisy_partials(
    plan: Plan, rows: Iterable[Sequence[Any]], units: Sequence[int], noise: np.ndarray
) -> np.ndarray:
    """The flat slot vector of one node's DP answer: in EVERY cell (empty ones too, so which cells hold rows
    is not revealed) each component is ``unit * (round(partial / unit) + noise)``.

    ``noise`` has one row per cell and one column per component (0 for the withheld mark, which DP never sets);
    ``units`` is each component's unit (see :mod:`federation.privacy.dp_plan`).

    >>> from hpf.federation.plan import Component
    >>> comps = (Component("count", None), Component("sum", "x", 0, 90), Component("withheld", None, 0, 2))
    >>> plan = Plan("t", None, (), comps, (), "", (), ())
    >>> encode_noisy_partials(plan, [(4, 1234)], [1, 100, 1], np.array([[-1, 2, 0]])).tolist()
    [3, 0, 0, 1400, 0, 0, 0]
    """
    layout = plan.layout
    sums = _cell_sums(plan, rows)
    empty = [0] * len(plan.components)
    flat = np.zeros(layout.total, dtype=np.int64)
    base_cells = np.arange(layout.cells, dtype=np.int64) * layout.width
    for j, comp in enumerate(plan.components):
        if not comp.from_sql:
            continue
        unit = units[j]
        column = noise[:, j].tolist()
        values = [
            unit * ((2 * sums.get(cell, empty)[j] + unit) // (2 * unit) + column[cell]) for cell in range(layout.cells)
        ]
        limbs = split_values(values, comp.bits)
        for limb in range(comp.limbs):
            flat[base_cells + layout.offsets[j] + limb] = limbs[:, limb]
    return flat


CANARY = 1
# A region whose rows make the plan fail (an overflow, an invalid cast) sends this in every canary slot instead of
# CANARY: the failure is inside the ciphertext, so the coordinator cannot tell it from an answer.
FAILED = CANARY + (1 << 20)


def chunks(flat: np.ndarray, *, failed: bool = False) -> list[np.ndarray]:
    """Cut a flat slot vector into ciphertext-sized pieces, each ending with the canary slot."""
    data = SLOTS - 1
    canary = np.int64(FAILED if failed else CANARY)
    return [np.append(flat[i : i + data], canary) for i in range(0, flat.shape[0], data)]


def failure_chunks(plan: Plan) -> list[np.ndarray]:
    """What a region sends when the plan fails on its rows: the failure mark in every canary, and fresh uniform
    randomness modulo the plain modulus in every other slot.

    Not zeros: the asker holds the key and can decrypt a sum the client refuses to show; with zeros from the
    failing regions it would hold the others' partials alone, their sum without the regions an expression was
    made to fail on (a way around both exact answers over every region and DP noise shares). Random slots
    make the whole sum uniform whenever any region failed; the canaries still count the failures exactly.
    """
    residues = masking.prg_residues(os.urandom(masking.SEED_BYTES), plan.layout.total)
    return chunks(masking.apply(np.zeros(plan.layout.total, dtype=np.int64), residues), failed=True)


def _failed_regions(decrypted_chunks: Sequence[np.ndarray], regions: int) -> int:
    """How many regions sent the failure mark; ANSWER_CORRUPT unless every canary says the same honest count."""
    canaries = {int(c[-1]) for c in decrypted_chunks}
    extra = canaries.pop() - regions * CANARY if len(canaries) == 1 else -1
    failed, rest = divmod(extra, FAILED - CANARY) if extra >= 0 else (-1, 0)
    if rest or not 0 <= failed <= regions:
        raise CryptoError(
            "the answer's check slot does not add up to the regions that answered "
            "(a region may have encrypted under another key, or a ciphertext was altered)",
            code="ANSWER_CORRUPT",
        )
    return failed


def _check_limb_bounds(plan: Plan, grid: np.ndarray, regions: int) -> None:
    """Every limb sum must be what ``regions`` honest range-checked limbs can add up to.

    A withheld mark is 0 or 1 per region, so its sum is in ``0..regions``.
    """
    layout = plan.layout
    low = np.zeros(layout.width, dtype=np.int64)
    high = np.zeros(layout.width, dtype=np.int64)
    for comp, start in zip(plan.components, layout.offsets, strict=True):
        top = start + comp.limbs - 1
        high[start:top] = regions * LIMB_MASK
        low[top], high[top] = -regions * (1 << (LIMB_BITS - 1)), regions * ((1 << (LIMB_BITS - 1)) - 1)
        if not comp.from_sql:
            low[start], high[start] = 0, regions
    if grid.size and ((grid < low).any() or (grid > high).any()):
        raise CryptoError(
            "the decrypted answer is not a sum of honest regional partials "
            "(a region may have encrypted under another key, or a ciphertext was altered)",
            code="ANSWER_CORRUPT",
        )


def decode_totals(
    plan: Plan, decrypted_chunks: Sequence[np.ndarray], regions: int, *, noisy: bool = False
) -> dict[int, list[int]]:
    """Exact federation-wide component totals of every cell that has at least one row or one withheld mark.

    Each cell's list has one total per component; at ``plan.withheld_index`` it is the number of regions that
    withheld the cell (``0..regions``), and when that is not 0 the other totals leave those regions out, so
    they must not be shown as the cell's values.
    ``regions`` is how many regions the answer sums; every chunk's canary must equal it (plus the failure mark
    of each region the plan failed on: then no answer is given, NODE_EXECUTION_FAILED, without naming them)
    and every limb sum must be in range, else the answer is refused. Ungrouped queries always have their
    single cell, as SQL returns one row even over no rows.

    A ``noisy`` (DP) answer has noise in every cell: every cell is returned, and a count may be negative.
    """
    layout = plan.layout
    if tuple(len(c) for c in decrypted_chunks) != layout.chunk_sizes:
        raise CryptoError("the answer does not match the plan's slot layout", code="CIPHERTEXT_SHAPE")
    failed = _failed_regions(decrypted_chunks, regions)
    if failed:
        raise DataError(
            f"{failed} region(s) could not compute this query over their own rows: a region stopped it at its own "
            "limits (time, memory, or the size of its partial), so no answer is shown (which regions, and why, "
            "is not said)",
            code="NODE_EXECUTION_FAILED",
            hint="ask a lighter question: fewer or simpler conditions, or a narrower table",
        )
    flat = np.concatenate([c[:-1] for c in decrypted_chunks]) if decrypted_chunks else np.zeros(0, dtype=np.int64)
    grid = flat.reshape(layout.cells, layout.width)
    _check_limb_bounds(plan, grid, regions)
    count_star, mark = plan.components[0], plan.withheld_index
    marked = grid[:, layout.offsets[mark]] != 0
    occupied = np.nonzero(grid[:, : count_star.limbs].any(axis=1) | marked)[0]
    if not plan.keys or noisy:
        occupied = np.arange(layout.cells)
    totals: dict[int, list[int]] = {}
    for cell in occupied.tolist():
        row = grid[cell]
        values = []
        for j, comp in enumerate(plan.components):
            start = layout.offsets[j]
            values.append(join_limbs(row[start : start + comp.limbs].tolist()))
        if values[0] < 0 and not noisy:
            raise CryptoError("a decrypted group count is negative", code="ANSWER_CORRUPT")
        if values[mark] == regions and any(v for j, v in enumerate(values) if j != mark):
            raise CryptoError("a group every region withheld has non-zero totals", code="ANSWER_CORRUPT")
        if plan.keys and values[0] == 0 and values[mark] == 0 and not noisy:
            continue
        totals[cell] = values
    return totals
