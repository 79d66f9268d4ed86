"""The oracle for minimum group sizes: which groups nodes applying ``k`` withhold, and how the answer shows them.

Pure functions over DuckDB results, so unit tests use them without starting a federation; ``harness.Federation``
wraps them with per-node DuckDB counts (``node_group_counts``, ``oracle_withheld``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["mask_withheld", "withheld_oracle"]


def withheld_oracle(per_node_counts: Mapping[str, Mapping[tuple[Any, ...], int]], k: int) -> dict[tuple[Any, ...], int]:
    """Which groups must be withheld, and by how many regions, when every node applies minimum group size ``k``.

    ``per_node_counts[node][group]`` is the node's ``COUNT(*)`` of the group after the query's WHERE (absent or
    0: the node has no row of it). A node withholds a group it holds 1 to k-1 rows of; ``k <= 1`` withholds none.
    (It also withholds a group whose aggregates cover or leave out 1 to k-1 rows; queries checked with this oracle
    have no FILTER and no NULL argument, so every aggregate covers all of a group's rows.)

    >>> withheld_oracle({"a": {("F",): 2, ("M",): 5}, "b": {("F",): 1, (None,): 4}}, k=3)
    {('F',): 2}
    """
    withheld: dict[tuple[Any, ...], int] = {}
    for counts in per_node_counts.values():
        for group, count in counts.items():
            if 1 <= count < k:
                withheld[group] = withheld.get(group, 0) + 1
    return withheld


def mask_withheld(
    rows: Sequence[Sequence[Any]], withheld: Mapping[tuple[Any, ...], int], n_keys: int
) -> list[tuple[Any, ...]]:
    """Oracle rows (keys first, then aggregates) as the federation shows them: withheld groups' aggregates NULL.

    >>> mask_withheld([("F", 3, 10), ("M", 5, 7)], {("F",): 1}, n_keys=1)
    [('F', None, None), ('M', 5, 7)]
    """
    out = []
    for row in rows:
        key = tuple(row[:n_keys])
        out.append(key + (None,) * (len(row) - n_keys) if key in withheld else tuple(row))
    return out
