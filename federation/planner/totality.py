"""Stage 3: every expression a node evaluates is total. No value of any row can make it fail.

Worked out from the catalog's column types alone (a node's view casts every column to its catalog type), before
anything is bound:

- **Arithmetic is typed wide.** Every ``+ - * ABS`` and unary minus over row values is computed as HUGEINT
  (integers) or DECIMAL(38, s) (decimals): its operands are cast to those first. The exact range of every
  such expression is derived from the operands' types; one that could leave the wide type is refused
  (``PLAN_MAY_OVERFLOW``), never left to fail on a particular row.
- **Casts must be total.** A cast of row values is accepted only where every value of its source type
  converts: a number into a type whose range holds the number's range, anything into VARCHAR or DOUBLE, a
  BOOLEAN into a number. A cast that could fail on a value (text into a number or a date, DOUBLE into an
  integer, a narrowing) is refused (``PLAN_CAST_NOT_TOTAL``); a constant's cast fails at plan time, if at
  all. ``TRY_CAST`` is total by definition (NULL where a value does not convert) and the policies count it as
  a filter. No CAST is silently turned into a TRY_CAST: that would change an exact answer.
- **Implicit casts must be total.** DuckDB casts a VARCHAR compared with a number, a date or a boolean to
  that type, row by row, and fails on text that does not convert. So the operands of a comparison, IN,
  BETWEEN, CASE, COALESCE, NULLIF, GREATEST and LEAST must be of one type family (numbers, text, dates,
  booleans; a string constant converts at plan time), and a decimal compared with an integer must fit the
  common DECIMAL(38, s). A condition (WHERE, WHEN, AND, OR, NOT, FILTER) must be a boolean.
- **Sums cannot outgrow their slots.** The range of every summed argument gives its component's width in
  bits, for at most ``2**ROW_BITS`` rows per region, so a region's partial always fits its limbs.

The kinds and their rules are in :mod:`federation.planner.kinds`, the kind of each node type in
:mod:`federation.planner.typer`.

>>> import sqlglot
>>> from hpf.federation.catalog import Table
>>> t = Table.model_validate({"columns": {"a": {"type": "INTEGER"}, "v": {"type": "VARCHAR"}}})
>>> tree = sqlglot.parse_one("SELECT SUM(a * 2) FROM t WHERE -a > 1", read="duckdb")
>>> make_total(tree, t).tree.sql("duckdb")
'SELECT SUM(CAST(a AS INT128) * 2) FROM t WHERE -CAST(a AS INT128) > 1'
>>> try:
...     make_total(sqlglot.parse_one("SELECT COUNT(*) FROM t WHERE v = 5", read="duckdb"), t)
... except Exception as err:
...     print(err.code)
PLAN_TYPE_MIX
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from hpf.federation.catalog import Table
from hpf.federation.errors import PlanError
from hpf.federation.planner.engine_tree import evaluate_constants
from hpf.federation.planner.kinds import MAX_SCALE, Kind, not_total
from hpf.federation.planner.typer import Typer

ROW_BITS = 26  # a region's partial is sized for at most 2**26 rows of a table at the full range of a value


@dataclass
class Totality:
    """The query made total, and the range of every summed argument (by its DuckDB SQL)."""

    tree: exp.Expression
    ranges: dict[str, Kind] = field(default_factory=dict)

    def sum_bits(self, arg_sql: str, scale: int, squares: bool = False) -> int | None:
        """Signed bits a region's SUM (or sum of squares) of ``arg_sql`` at ``scale`` needs; None if unknown."""
        kind = self.ranges.get(arg_sql)
        if kind is None or kind.lo is None:
            return None
        units = kind.magnitude * 10**scale
        top = int(units) + (units.denominator != 1)
        if squares:  # summed as 32-bit halves in HUGEINT (Component.sql_terms): the high half's square must fit
            # and Component.sql_terms scales it as DECIMAL(38, scale) first: x * 10**scale within 10**(38 - scale)
            if top >= 2**82 or units >= 10 ** max(MAX_SCALE - scale, 0):
                raise not_total(
                    "a variance's argument (its square is summed)",
                    "PLAN_MAY_OVERFLOW",
                    "the argument of VAR and STDDEV must stay within 2**82 at its scale",
                )
            top = top * top
        need = (top << ROW_BITS).bit_length() + 1
        if need > 126 and not squares:  # DuckDB sums in HUGEINT
            raise not_total("a summed argument", "PLAN_MAY_OVERFLOW")
        return need


def make_total(tree: exp.Expression, table: Table) -> Totality:
    """The query with wide arithmetic, checked total (see the module); raises PlanError otherwise."""
    tree = tree.copy()
    typer = Typer(table)
    where = tree.args.get("where")
    if where is not None:
        typer.row_level = True
        typer.condition(where.this, "a WHERE clause")
        typer.row_level = False
    for item in tree.expressions:
        typer.kind(item.unalias())
    group = tree.args.get("group")
    for key in group.expressions if group else []:
        typer.kind(key)
    having = tree.args.get("having")
    if having is not None:
        typer.kind(having.this)
    order = tree.args.get("order")
    for ordered in order.expressions if order else []:
        typer.kind(ordered.this)
    for limit in ("limit", "offset"):
        clause = tree.args.get(limit)
        value = clause.expression if clause is not None else None
        if value is not None and not (isinstance(value, exp.Literal) and value.this.isdigit()):
            raise PlanError(f"{limit.upper()} takes a whole-number constant", code="PLAN_EXPRESSION_NOT_ALLOWED")
    evaluate_constants([c.sql("duckdb") for c in typer.constants])
    return Totality(tree=tree, ranges=typer.ranges)
