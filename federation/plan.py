"""The partial plan: what every node computes, how it is laid out in slots, and how the client finishes it.

A plan is a pure function of the SQL text and the catalog. The coordinator, every node and the client
derive it independently and compare :attr:`Plan.fingerprint`; they never exchange it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from hpf.federation.crypto.he import SLOTS
from hpf.federation.crypto.limb_codec import limbs_for

OTHER = "(other)"
WITHHELD = "withheld"


@dataclass(frozen=True)
class GroupKey:
    """A GROUP BY key: its node-side expression and its declared finite domain.

    Its cells are the domain values in order, then NULL, then "other" (values outside the domain).
    """

    expr: str
    values: tuple[Any, ...]
    type: str

    @property
    def cells(self) -> int:
        return len(self.values) + 2

    @property
    def null_cell(self) -> int:
        return len(self.values)

    @property
    def other_cell(self) -> int:
        return len(self.values) + 1


@dataclass(frozen=True)
class Component:
    """An additive partial every node computes per group: COUNT(*), COUNT(x), SUM(x) or SUM(x*x).

    ``scale`` is the decimal scale of the integer it travels as; ``bits`` bounds its signed size.
    The ``withheld`` component is no aggregate: a node sets it to 1 in a group it withholds (fewer rows than
    its minimum group size), so its federation-wide total is the number of regions that withheld the group.
    """

    kind: str  # "count" | "sum" | "sumsq" | "withheld"
    arg: str | None  # DuckDB SQL of the argument; None for COUNT(*) and withheld
    scale: int = 0
    bits: int = 64

    @property
    def limbs(self) -> int:
        return limbs_for(self.bits)

    @property
    def from_sql(self) -> bool:
        """Whether a node computes this component with SQL (all but the withheld mark)."""
        return self.kind != WITHHELD

    def sql_terms(self) -> list[str]:
        """The SQL aggregates a node runs for this component (see :meth:`combine`); none for the withheld mark."""
        if not self.from_sql:
            return []
        if self.kind == "count":
            return ["COUNT(*)" if self.arg is None else f"COUNT({self.arg})"]
        if self.kind == "sum":
            return [f"SUM({self.arg})"]
        if self.scale:  # widen first: DuckDB keeps narrow decimals narrow and would overflow
            s = self.scale // 2
            x = f"CAST(CAST(({self.arg}) AS DECIMAL(38,{s})) * {10**s} AS HUGEINT)"
        else:
            x = f"CAST(({self.arg}) AS HUGEINT)"
        # x*x overflows 128 bits for 64-bit x summed over rows: with x = h*2^32 + l (0 <= l < 2^32),
        # sum(x^2) = sum(h^2)*2^64 + sum(h*l)*2^33 + sum(l^2), each term safely inside HUGEINT.
        h, low = f"({x} >> 32)", f"({x} & 4294967295)"
        return [f"SUM({h} * {h})", f"SUM({h} * {low})", f"SUM({low} * {low})"]

    def combine(self, values: list[int]) -> int:
        """This component's integer from its SQL terms' (already scaled) integers."""
        if self.kind == "sumsq":
            return (values[0] << 64) + (values[1] << 33) + values[2]
        return values[0]


@dataclass(frozen=True)
class Aggregate:
    """One aggregate call of the query, finished by the client from component totals."""

    func: str  # count | sum | avg | var_pop | var_samp | stddev_pop | stddev_samp
    count: int  # index of the COUNT component (of the argument, or COUNT(*))
    sum: int | None = None
    sumsq: int | None = None
    scale: int = 0
    result_type: str = "BIGINT"


@dataclass(frozen=True)
class SlotLayout:
    """group x component x limb, flattened and cut into ciphertext-sized chunks.

    Each chunk ends with one canary slot in which every region puts 1, so the client can check that the
    decrypted sum of a chunk really adds one ciphertext under its key per answering region.
    """

    cells: int
    offsets: tuple[int, ...]  # first limb slot of each component within a cell
    width: int  # slots per cell

    @property
    def total(self) -> int:
        return self.cells * self.width

    @property
    def chunk_sizes(self) -> tuple[int, ...]:
        """Slots per ciphertext, canary included."""
        data = SLOTS - 1
        full, rest = divmod(self.total, data)
        return (SLOTS,) * full + ((rest + 1,) if rest else ())


def layout_of(key_cells: Sequence[int], components: Sequence[Component]) -> SlotLayout:
    """The slot layout of a plan whose keys have ``key_cells`` cells each (domain, NULL, other)."""
    offsets, pos = [], 0
    for c in components:
        offsets.append(pos)
        pos += c.limbs
    cells = 1
    for n in key_cells:
        cells *= n
    return SlotLayout(cells=cells, offsets=tuple(offsets), width=pos)


@dataclass(frozen=True)
class Plan:
    table: str
    where: str | None
    keys: tuple[GroupKey, ...]
    components: tuple[Component, ...]
    aggregates: tuple[Aggregate, ...]
    finish_sql: str
    output_names: tuple[str, ...]
    bare_key_outputs: tuple[int | None, ...]  # per output column: key index if it is just that key
    fingerprint: str = field(default="", compare=False)

    @cached_property
    def withheld_index(self) -> int:
        """Index of the withheld-mark component (every plan has exactly one, after the aggregates' components)."""
        return [c.kind for c in self.components].index(WITHHELD)

    @cached_property
    def layout(self) -> SlotLayout:
        return layout_of([k.cells for k in self.keys], self.components)

    def node_sql(self, source: str | None = None) -> str:
        """The one query a node runs on its own database for this plan (over ``source``, default the table)."""
        keys = [f"{k.expr} AS k{i}" for i, k in enumerate(self.keys)]
        comps = [f"{term} AS c{i}_{j}" for i, c in enumerate(self.components) for j, term in enumerate(c.sql_terms())]
        # the withheld mark has no SQL term: the node sets it while encoding (see slot_codec.encode_partials)
        sql = f"SELECT {', '.join(keys + comps)} FROM {source or self.table}"
        if self.where:
            sql += f" WHERE {self.where}"
        if self.keys:
            sql += " GROUP BY " + ", ".join(f"k{i}" for i in range(len(self.keys)))
        return sql


def finish_columns(plan: Plan) -> list[tuple[str, str]]:
    """Name and type of every ``__groups`` column the client finishes the answer over: keys, aggregates, "other"
    flags."""
    cols = [(f"k{i}", k.type) for i, k in enumerate(plan.keys)]
    cols += [(f"a{i}", a.result_type) for i, a in enumerate(plan.aggregates)]
    cols += [(f"__other{i}", "BOOLEAN") for i in range(len(plan.keys))]
    return cols or [("dummy", "INTEGER")]


def finish_table_ddl(plan: Plan) -> str:
    return "CREATE TEMP TABLE __groups (" + ", ".join(f"{n} {t}" for n, t in finish_columns(plan)) + ")"


def canonical_digest(canonical: Mapping[str, Any]) -> str:
    """The fingerprint of a plan's canonical form (what the planner's sketch and :func:`plan_fingerprint` give)."""
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def plan_fingerprint(plan: Plan, column_types: Mapping[str, str]) -> str:
    """The fingerprint of ``plan``, worked out again from its fields and its table's column types (as the catalog
    declares them): the planner's own for any plan it made. A plan kept on disk is checked with it, so the
    fingerprint the coordinator compares is that of the plan the client finishes with, never one copied along.
    Fields that binding derives (key and result types, bare key outputs) are not in it."""
    return canonical_digest(
        {
            "table": plan.table,
            "where": plan.where,
            "keys": [[k.expr, [str(v) for v in k.values]] for k in plan.keys],
            "components": [[c.kind, c.arg, c.scale, c.bits] for c in plan.components],
            "aggregates": [[a.func, a.count, a.sum, a.sumsq, a.scale] for a in plan.aggregates],
            "finish": plan.finish_sql,
            "outputs": list(plan.output_names),
            "columns": dict(column_types),
        }
    )
