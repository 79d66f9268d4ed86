"""Types for the Spark rendering: DuckDB's own type of each operand a rule needs, a DuckDB type as Spark's, and a
Spark value as DuckDB's.

The rules of :mod:`federation.planner.spark_dialect` depend on exact types (an integer SUM against a DECIMAL
one, the scale of a DECIMAL, a DOUBLE against a BIGINT). Rather than guess them from the tree, DuckDB is asked:
the operands are selected over an empty table of the catalog's column types and described (``DESCRIBE``), in
one query, as are the columns of the node query's answer.

>>> import sqlglot
>>> tree = sqlglot.parse_one("SELECT SUM(x * 2) AS c FROM t", read="duckdb")
>>> types = duckdb_types(tree, {"x": "DECIMAL(12,2)"}, PlanError)
>>> types.of(tree.find(exp.Sum).this).sql("duckdb"), [(n, t.sql("duckdb")) for n, t in types.answer]
('DECIMAL(18, 2)', [('c', 'DECIMAL(38, 2)')])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

import duckdb
from sqlglot import exp

from hpf.federation.errors import PlanError

_T = exp.DataType.Type
# DuckDB type -> Spark type, where they hold the same values; anything else has no exact counterpart
_SPARK_TYPES = {
    _T.TINYINT: "TINYINT",
    _T.SMALLINT: "SMALLINT",
    _T.INT: "INT",
    _T.BIGINT: "BIGINT",
    _T.INT128: "DECIMAL(38, 0)",
    _T.DOUBLE: "DOUBLE",
    _T.BOOLEAN: "BOOLEAN",
    _T.DATE: "DATE",
    _T.VARCHAR: "STRING",
    _T.TEXT: "STRING",
}
_OPERANDS: dict[type[exp.Expression], tuple[str, ...]] = {
    exp.Cast: ("this",),
    exp.Sum: ("this",),
    exp.Sign: ("this",),
    exp.Ordered: ("this",),
    exp.Div: ("this", "expression"),
    exp.IntDiv: ("this", "expression"),
    exp.DPipe: ("this", "expression"),
    exp.Add: ("",),
    exp.Sub: ("",),
    exp.Mul: ("",),
}


@dataclass(frozen=True)
class DuckTypes:
    """DuckDB's types of the operands of one node query (by the identity of their tree nodes) and of its
    answer's columns."""

    operands: dict[int, exp.DataType]
    answer: list[tuple[str, exp.DataType]]
    refuse: Callable[[str], PlanError]

    def of(self, node: exp.Expression) -> exp.DataType:
        if isinstance(node, exp.Null):
            return exp.DataType(this=_T.NULL)
        found = self.operands.get(id(node))
        if found is None:
            raise self.refuse("an operand of unknown type")
        return found


def _operands(tree: exp.Expression) -> list[exp.Expression]:
    """The row-level expressions whose types the rules read."""
    found: list[exp.Expression] = []
    for node in tree.walk():
        kind = cast(type[exp.Expression], type(node))
        keys = _OPERANDS.get(kind, ("expressions",) if isinstance(node, exp.Concat) else ())
        for key in keys:
            value = node if key == "" else node.args.get(key)
            values = value if isinstance(value, list) else [value]
            found += [v for v in values if isinstance(v, exp.Expression) and not isinstance(v, exp.Null)]
    return [v for v in found if v.find(exp.AggFunc, exp.Window) is None]


def duckdb_types(tree: exp.Expression, columns: Mapping[str, str], refuse: Callable[[str], PlanError]) -> DuckTypes:
    """DuckDB's types for ``tree`` (a node query over one table of ``columns``); a query DuckDB cannot type
    over them (a column of no known type) is refused, without DuckDB's message."""
    table = tree.find(exp.Table)
    if table is None:
        raise refuse("a node query without a table")
    name = exp.to_identifier(table.name, quoted=True).sql("duckdb")
    declared = [f"{exp.to_identifier(c, quoted=True).sql('duckdb')} {t}" for c, t in columns.items()]
    operands = _operands(tree)
    select = ", ".join(f'{v.sql("duckdb")} AS "e{i}"' for i, v in enumerate(operands))
    try:
        with duckdb.connect(":memory:") as con:
            con.execute(f"CREATE TABLE {name} ({', '.join(declared) or '__hpf_none INTEGER'})")
            described = con.execute(f"DESCRIBE SELECT {select} FROM {name}").fetchall() if operands else []
            answer = con.execute(f"DESCRIBE {tree.sql('duckdb')}").fetchall()
    except duckdb.Error:
        raise refuse("an operand of unknown type") from None
    kinds = [exp.DataType.build(row[1], dialect="duckdb") for row in described]
    return DuckTypes(
        {id(v): k for v, k in zip(operands, kinds, strict=True)},
        [(str(row[0]), exp.DataType.build(row[1], dialect="duckdb")) for row in answer],
        refuse,
    )


def spark_type(node: exp.Expression, refuse: Callable[[str], PlanError]) -> exp.Expression:
    """The Spark type holding exactly the values of the DuckDB type ``node``."""
    assert isinstance(node, exp.DataType)
    if node.this == _T.DECIMAL:
        return exp.DataType(this=_T.DECIMAL, expressions=node.expressions)
    name = _SPARK_TYPES.get(node.this)
    if name is None:
        raise refuse(f"the type {node.sql('duckdb')}")
    return exp.DataType.build(name, dialect="spark")


def spark_value(value: Any) -> Any:
    """A value of a Spark row as DuckDB gives it for the rendered query: a DECIMAL of scale 0 (a HUGEINT or an
    integer SUM, see the module) as ``int``; anything else as it is.

    >>> spark_value(Decimal("-170141183460469231731687303715884105")), spark_value(Decimal("12.50"))
    (-170141183460469231731687303715884105, Decimal('12.50'))
    """
    if isinstance(value, Decimal) and value.is_finite() and value.as_tuple().exponent == 0:
        return int(value)
    return value
