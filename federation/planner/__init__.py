"""From SQL text to a :class:`federation.plan.Plan`: a tuple of small stages, each a pure function.

parse -> check_shape -> resolve_table | admission by policy | resolve_columns -> split_query ->
check_identifiers -> check_surface (the allow-list) -> make_total -> the engine's own parse tree -> bind.

Everything before ``bind`` reads the SQL and the catalog only: it binds nothing and runs nothing, so it is cheap
and bounded whatever the SQL is. Its result, the :class:`Sketch`, already fixes the plan's slot layout and its
fingerprint; the coordinator never needs more. Binding (DuckDB over empty catalog-shaped tables, for result
types and to catch what only the engine knows) comes last, under the binder's own memory and time limits, and a
node does it only after its policy admitted the asker's role, table and purpose.
Every party runs the same stages on the same catalog and gets the same plan (and fingerprint).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, cast

from sqlglot import exp

from hpf.federation.catalog import Catalog, Table
from hpf.federation.errors import PlanError
from hpf.federation.plan import (
    WITHHELD,
    Aggregate,
    Component,
    GroupKey,
    Plan,
    SlotLayout,
    canonical_digest,
    finish_columns,
    layout_of,
)
from hpf.federation.planner.binder import AGGREGATE_NAMES, CatalogKey, SchemaBinder, binder_for, exact_scale
from hpf.federation.planner.domains import coerce_to_type, key_domain
from hpf.federation.planner.engine_tree import check_engine_sql
from hpf.federation.planner.resolve import check_identifiers, resolve_columns, resolve_table
from hpf.federation.planner.shape import check_shape, parse
from hpf.federation.planner.split import AggregateCall, Split, split_query
from hpf.federation.planner.surface import check_surface, masked_sql
from hpf.federation.planner.totality import Totality, make_total

MAX_SLOTS = 64 * 4096  # 64 ciphertexts per node answer
MAX_AGGREGATES = 256  # aggregate calls in one question (each is checked, bound and laid out)

COUNT_BITS, SUM_BITS, SUMSQ_BITS = 64, 90, 150
WITHHELD_BITS = 2  # a 0/1 mark per region: one limb, whose sum over 256 regions is checked to be 0..regions


def plan_query(sql: str, catalog: Catalog) -> Plan:
    """Check ``sql`` against ``catalog`` and derive its partial plan, or raise a PlanError.

    Plans are pure functions of (SQL, catalog), so the last few are cached.
    """
    return _cached_plan(sql, CatalogKey(catalog))


def sketch_query(sql: str, catalog: Catalog) -> Sketch:
    """Every check that needs no binding, the slot layout and the fingerprint (see the module)."""
    return _cached_sketch(sql, CatalogKey(catalog))


def asked_table(sql: str, catalog: Catalog) -> str:
    """The catalog table ``sql`` reads: parsed and shape-checked, nothing else (what a policy admits first)."""
    return _cached_table(sql, CatalogKey(catalog))


@lru_cache(maxsize=256)
def _cached_table(sql: str, key: CatalogKey) -> str:
    name, _ = resolve_table(check_shape(parse(sql)), key.catalog)
    return name


@dataclass
class Sketch:
    """A plan before binding: what every node computes, without the result types only DuckDB can tell."""

    table: str
    where: str | None
    keys: list[tuple[exp.Expression, str, list[Any]]]  # expression, its SQL, its declared domain
    components: list[Component]
    calls: list[tuple[AggregateCall, int, int | None, int | None, int]]  # call, count, sum, sumsq, scale
    split: Split
    column_types: dict[str, str]
    finish_sql: str = ""
    fingerprint: str = field(default="")

    @cached_property
    def layout(self) -> SlotLayout:
        return layout_of([len(values) + 2 for _, _, values in self.keys], self.components)

    def canonical(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "where": self.where,
            "keys": [[sql, [str(v) for v in values]] for _, sql, values in self.keys],
            "components": [[c.kind, c.arg, c.scale, c.bits] for c in self.components],
            "aggregates": [
                [call.func, count, total, squares, scale] for call, count, total, squares, scale in self.calls
            ],
            "finish": self.finish_sql,
            "outputs": list(self.split.output_names),
            "columns": self.column_types,
        }


@lru_cache(maxsize=256)
def _cached_sketch(sql: str, key: CatalogKey) -> Sketch:
    try:
        return _derive_sketch(sql, key.catalog)
    except RecursionError:  # the depth checks should make this impossible; never an INTERNAL if they do not
        raise PlanError("the query nests too deeply", code="PLAN_TOO_NESTED") from None


@lru_cache(maxsize=256)
def _cached_plan(sql: str, key: CatalogKey) -> Plan:
    return _bind(_cached_sketch(sql, key), binder_for(key.catalog))


def _derive_sketch(sql: str, catalog: Catalog) -> Sketch:
    tree = check_shape(parse(sql))
    table_name, table = resolve_table(tree, catalog)
    tree = resolve_columns(tree, table_name, table)
    names = split_query(tree, set(table.columns), AGGREGATE_NAMES).output_names  # says why before who
    tree = check_identifiers(tree, table_name, table)
    check_surface(tree)
    total = make_total(tree, table)
    split = split_query(cast(exp.Select, total.tree), set(table.columns), AGGREGATE_NAMES)
    split.output_names = names
    where = total.tree.args.get("where")
    where_sql = where.this.sql("duckdb") if where is not None else None

    keys = []
    for key in split.keys:
        sql_text = key.sql("duckdb")
        values = key_domain(key, table)
        if values is None:
            raise _no_domain(key, sql_text)
        keys.append((key, sql_text, values))

    if len(split.calls) > MAX_AGGREGATES:
        raise PlanError(
            f"the query has {len(split.calls)} aggregates; at most {MAX_AGGREGATES} fit one question",
            code="PLAN_TOO_LARGE",
            hint="ask for fewer aggregates at a time",
        )
    components: list[Component] = [Component("count", None, 0, COUNT_BITS)]
    index: dict[Component, int] = {components[0]: 0}

    def component(c: Component) -> int:
        if c not in index:
            index[c] = len(components)
            components.append(c)
        return index[c]

    calls = [(call, *_components(call, total, component)) for call in split.calls]
    components.append(Component(WITHHELD, None, 0, WITHHELD_BITS))  # every plan, so every party lays it out
    sketch = Sketch(
        table=table_name,
        column_types={name: column.type for name, column in table.columns.items()},
        where=where_sql,
        keys=keys,
        components=components,
        calls=calls,
        split=split,
        finish_sql=split.finish.sql("duckdb") if split.finish is not None else "",
    )
    if sketch.layout.total > MAX_SLOTS:
        raise PlanError(
            f"the query needs {sketch.layout.total} slots ({sketch.layout.cells} groups); at most {MAX_SLOTS} fit",
            code="PLAN_TOO_LARGE",
            hint="group by fewer or smaller domains",
        )
    _check_engine_trees(sketch, table)
    sketch.fingerprint = canonical_digest(sketch.canonical())  # federation.plan.plan_fingerprint works it out again
    return sketch


def _no_domain(key: exp.Expression, sql: str, type_name: str | None = None) -> PlanError:
    cols = ", ".join(sorted({c.name for c in key.find_all(exp.Column)}))
    sql = masked_sql(key)  # the key's shape: its literals may be values the asker does not want echoed
    if type_name is not None:
        return PlanError(
            f"GROUP BY {sql} has no declared finite domain of its type ({type_name})",
            code="PLAN_GROUP_NO_DOMAIN",
            hint=f"declare a domain for {cols} in the catalog whose values are {type_name}",
        )
    return PlanError(
        f"GROUP BY {sql} has no declared finite domain",
        code="PLAN_GROUP_NO_DOMAIN",
        hint=(
            f"declare a domain for {cols} in the catalog, or group by a declared column, "
            "EXTRACT(YEAR|QUARTER|MONTH FROM a declared date) or CASE ... THEN literals"
        ),
    )


def _components(
    call: AggregateCall, total: Totality, component: Callable[[Component], int]
) -> tuple[int, int | None, int | None, int]:
    """The components an aggregate call needs (indices of count, sum, sum of squares) and its decimal scale."""
    if call.arg is None:
        return 0, None, None, 0
    arg_sql = call.arg.sql("duckdb")
    count = component(Component("count", arg_sql, 0, COUNT_BITS))
    if call.func == "count":
        return count, None, None, 0
    kind = total.ranges.get(arg_sql)
    if kind is None or kind.family not in ("int", "dec") or kind.lo is None:
        shown = "a floating-point number" if kind is not None and kind.family == "double" else "not a number"
        raise PlanError(
            f"{call.func.upper()}'s argument must be an exact number (integer or DECIMAL), and it is {shown}",
            code="PLAN_INEXACT_ARGUMENT",
            hint="declare the column as DECIMAL(p,s) in the catalog, or CAST it to DECIMAL",
        )
    scale = kind.scale
    bits = max(SUM_BITS, total.sum_bits(arg_sql, scale) or SUM_BITS)
    summed = component(Component("sum", arg_sql, scale, bits))
    if call.func in ("sum", "avg"):
        return count, summed, None, scale
    square_bits = max(SUMSQ_BITS, total.sum_bits(arg_sql, scale, squares=True) or SUMSQ_BITS)
    squares = component(Component("sumsq", arg_sql, 2 * scale, square_bits))
    return count, summed, squares, scale


def _check_engine_trees(sketch: Sketch, table: Table) -> None:
    """DuckDB's own parse of what a node runs and of what the asker's side runs, against the allow-list."""
    items = [f"{sql} AS k{i}" for i, (_, sql, _) in enumerate(sketch.keys)]
    for c in sketch.components:
        if c.kind == "count":
            items.append("COUNT(*)" if c.arg is None else f"COUNT({c.arg})")
        elif c.kind in ("sum", "sumsq"):
            items.append(f"SUM({c.arg})")
    node_sql = f"SELECT {', '.join(items)} FROM {sketch.table}"
    if sketch.where:
        node_sql += f" WHERE {sketch.where}"
    if sketch.keys:
        node_sql += " GROUP BY " + ", ".join(f"k{i}" for i in range(len(sketch.keys)))
    check_engine_sql(node_sql, set(table.columns), table=sketch.table)
    finish_columns = {f"k{i}" for i in range(len(sketch.keys))} | {f"a{i}" for i in range(len(sketch.calls))}
    finish_columns |= {f"__other{i}" for i in range(len(sketch.keys))}
    check_engine_sql(sketch.finish_sql, finish_columns, table="__groups", modifiers=True)


def _bind(sketch: Sketch, binder: SchemaBinder) -> Plan:
    key_sqls = [sql for _, sql, _ in sketch.keys]
    agg_sqls = [call.source.sql("duckdb") for call, *_ in sketch.calls]
    probe = "SELECT " + ", ".join([*key_sqls, *agg_sqls, "COUNT(*)"]) + f" FROM {sketch.table}"
    if sketch.where:
        probe += f" WHERE {sketch.where}"
    if key_sqls:
        probe += " GROUP BY " + ", ".join(key_sqls)
    types = binder.types(probe)
    key_types, agg_types = types[: len(key_sqls)], types[len(key_sqls) : len(key_sqls) + len(agg_sqls)]

    keys = []
    for (key, sql, values), type_name in zip(sketch.keys, key_types, strict=True):
        coerced = coerce_to_type(values, type_name)
        if coerced is None:
            raise _no_domain(key, sql, type_name)
        keys.append(GroupKey(expr=sql, values=coerced, type=type_name))

    summed_args = [call.arg.sql("duckdb") for call, _, summed, *_ in sketch.calls if summed is not None and call.arg]
    arg_types = iter(binder.types(f"SELECT {', '.join(summed_args)} FROM {sketch.table}") if summed_args else [])
    aggregates = []
    for (call, count, summed, squares, scale), result_type in zip(sketch.calls, agg_types, strict=True):
        if summed is not None:
            arg_type = next(arg_types)
            if exact_scale(arg_type) != scale:
                raise PlanError(
                    f"{call.func.upper()}'s argument binds as {arg_type}, not the exact type the plan derived",
                    code="PLAN_BIND",
                    hint="CAST the argument to DECIMAL(38, s) or HUGEINT",
                )
        aggregates.append(Aggregate(call.func, count, summed, squares, scale, result_type))

    plan = Plan(
        table=sketch.table,
        where=sketch.where,
        keys=tuple(keys),
        components=tuple(sketch.components),
        aggregates=tuple(aggregates),
        finish_sql=sketch.finish_sql,
        output_names=tuple(sketch.split.output_names),
        bare_key_outputs=tuple(sketch.split.bare_key_outputs),
    )
    _check_finish(plan, binder)
    object.__setattr__(plan, "fingerprint", sketch.fingerprint)
    return plan


def _check_finish(plan: Plan, binder: SchemaBinder) -> None:
    """Bind the finishing query over an empty ``__groups`` of the right types."""
    empty = ", ".join(f"CAST(NULL AS {t}) AS {n}" for n, t in finish_columns(plan))
    try:
        binder.types(f"WITH __groups AS (SELECT {empty} WHERE FALSE) {plan.finish_sql}")
    except PlanError as err:
        raise PlanError(
            "the query's HAVING, ORDER BY or expressions over aggregates cannot be run: "
            + err.message.removeprefix("the query cannot be run: "),
            code="PLAN_BIND",
        ) from None
