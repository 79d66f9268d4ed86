"""The allow-list again, on DuckDB's own parse tree of the SQL a node runs (``json_serialize_sql``).

sqlglot parses the asker's SQL and writes the node's SQL back out; DuckDB parses that text again. Where the two
parsers read a form differently (``x -> x + 1`` is a JSON path to sqlglot and a lambda to DuckDB), the second
reading is checked here against the same allow-list, by DuckDB's names: expression classes and types, function
names, and plain column references to the plan's own columns only. Parsing binds nothing and runs nothing.

>>> check_engine_sql("SELECT COUNT(*) AS c FROM t WHERE a > 1", {"a"}, table="t")
>>> try:
...     check_engine_sql("SELECT COUNT(*) FROM t WHERE list_transform(a, x -> x + 1) = 2", {"a"}, table="t")
... except Exception as err:
...     print(err.code, err.message.split(",")[0])
PLAN_EXPRESSION_NOT_ALLOWED DuckDB's reading of the node query holds function list_transform
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection, Iterator
from typing import Any

import duckdb

from hpf.federation.engine import interrupting, locked_connection, public_engine_message
from hpf.federation.errors import PlanError
from hpf.federation.planner.allow_list import duckdb_names

_NAMES = duckdb_names()
_STRUCTURE = frozenset({"SELECT_NODE", "BASE_TABLE", "ORDER_MODIFIER", "LIMIT_MODIFIER", "TYPE"})
_CLASSES = frozenset(
    {"COLUMN_REF", "CONSTANT", "FUNCTION", "COMPARISON", "CONJUNCTION", "OPERATOR", "CASE", "CAST", "BETWEEN", "TYPE"}
)
_TYPE_NAMES = frozenset(
    {
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "INT",
        "BIGINT",
        "HUGEINT",
        "INT128",
        "DECIMAL",
        "DOUBLE",
        "FLOAT",
        "REAL",
        "VARCHAR",
        "TEXT",
        "DATE",
        "BOOLEAN",
        "BOOL",
    }
)
_ALLOWED_TYPES = _NAMES["types"] | {
    "VALUE_CONSTANT",
    "COMPARE_EQUAL",
    "COMPARE_NOTEQUAL",
    "COMPARE_LESSTHAN",
    "COMPARE_GREATERTHAN",
    "COMPARE_LESSTHANOREQUALTO",
    "COMPARE_GREATERTHANOREQUALTO",
    "COMPARE_DISTINCT_FROM",
    "COMPARE_NOT_DISTINCT_FROM",
    "COMPARE_IN",
    "COMPARE_NOT_IN",
    "COMPARE_BETWEEN",
    "CONJUNCTION_AND",
    "CONJUNCTION_OR",
    "OPERATOR_NOT",
    "OPERATOR_IS_NULL",
    "OPERATOR_IS_NOT_NULL",
    "OPERATOR_COALESCE",
    "OPERATOR_CAST",
    "CASE_EXPR",
    "FUNCTION",
    "COLUMN_REF",
    "TYPE",
}
_lock = threading.Lock()
_con = None


def _cursor() -> duckdb.DuckDBPyConnection:
    """A cursor of this module's one locked-down engine (parse trees and constants only: it holds no table)."""
    global _con
    with _lock:
        if _con is None:
            _con = locked_connection()
        return _con.cursor()


def _parse(sql: str) -> dict[str, Any]:
    cur = _cursor()
    try:
        row = cur.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    finally:
        cur.close()
    assert row is not None
    parsed: dict[str, Any] = json.loads(row[0])
    return parsed


CONSTANT_SECONDS = 2.0


def evaluate_constants(sqls: list[str]) -> None:
    """Evaluate every constant of a question once, at plan time, unguarded by any row condition.

    A constant the engine cannot compute (``CAST('x' AS INTEGER)``, ``DATE '2020-02-30'``, an overflowing constant
    sum) would otherwise fail only on the rows whose condition reaches it, which would say that such rows exist.
    Only allow-listed forms get here, each linear in a text no longer than the query.
    """
    if not sqls:
        return
    cur = _cursor()
    try:
        with interrupting(cur, CONSTANT_SECONDS):
            cur.execute("SELECT " + ", ".join(dict.fromkeys(sqls))).fetchall()
    except duckdb.Error as err:
        raise PlanError(
            f"a constant in the query cannot be computed: {public_engine_message(err)}",
            code="PLAN_BIND",
            hint="check the constants: dates, numbers and the types they are cast to",
        ) from None
    finally:
        cur.close()


def _refuse(what: str) -> PlanError:
    return PlanError(
        f"DuckDB's reading of the node query holds {what}, which is not part of the federation's SQL",
        code="PLAN_EXPRESSION_NOT_ALLOWED",
        hint="see the allowed SQL forms and functions in docs/sql-surface.md",
    )


def _expressions(node: Any) -> Iterator[dict[str, Any]]:
    """Every expression object (a dict with a "class") under ``node``, iteratively."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "class" in item:
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _check_expression(e: dict[str, Any], columns: Collection[str]) -> None:
    cls, kind = e.get("class"), e.get("type")
    if cls not in _CLASSES or kind not in _ALLOWED_TYPES:
        raise _refuse(f"a {str(cls).lower()} ({str(kind).lower()})")
    if cls == "COLUMN_REF":
        names = e.get("column_names") or []
        if len(names) != 1 or names[0] not in columns:
            raise _refuse("a reference to something other than one of the plan's columns")
    elif cls == "FUNCTION":
        name = str(e.get("function_name", ""))
        if name not in _NAMES["functions"] | _NAMES["aggregates"] or e.get("schema") or e.get("catalog"):
            raise _refuse(f"function {name}")
        if e.get("distinct") or (e.get("order_bys") or {}).get("orders") or e.get("export_state"):
            raise _refuse(f"a DISTINCT, ORDER BY or exported state inside {name}")
    elif cls == "TYPE":
        if str(e.get("type_name", "")).upper() not in _TYPE_NAMES:
            raise _refuse(f"type {e.get('type_name')}")
    elif cls == "CAST" and e.get("type_expr") is None and e.get("cast_type") is None:
        raise _refuse("a cast to an unnamed type")


def check_engine_sql(sql: str, columns: Collection[str], *, table: str, modifiers: bool = False) -> None:
    """Refuse ``sql`` unless DuckDB parses it as one SELECT over ``table`` made only of allowed expressions that
    reference only ``columns``. ``modifiers`` admits ORDER BY and constant LIMIT/OFFSET (the asker's finishing
    query). The planner passes the node's query with each summed argument as it is, not split into the halves
    of :meth:`federation.plan.Component.sql_terms`, which are the product's own SQL."""
    parsed = _parse(sql)
    if parsed.get("error"):
        raise _refuse("a form DuckDB cannot parse the way sqlglot wrote it")
    statements = parsed.get("statements") or []
    if len(statements) != 1:
        raise _refuse("more than one statement")
    node = statements[0].get("node") or {}
    if node.get("type") != "SELECT_NODE":
        raise _refuse(f"a {str(node.get('type')).lower()}")
    if (node.get("cte_map") or {}).get("map") or node.get("qualify") or node.get("sample"):
        raise _refuse("a CTE, QUALIFY or SAMPLE")
    if node.get("aggregate_handling") != "STANDARD_HANDLING" or len(node.get("group_sets") or [[]]) > 1:
        raise _refuse("GROUP BY ALL, CUBE, ROLLUP or GROUPING SETS")
    source = node.get("from_table") or {}
    if (
        source.get("type") != "BASE_TABLE"
        or source.get("table_name") != table
        or source.get("schema_name")
        or source.get("catalog_name")
        or source.get("sample")
        or source.get("at_clause")
        or source.get("column_name_alias")
    ):
        raise _refuse("a FROM other than the plan's one table")
    for modifier in node.get("modifiers") or []:
        if not modifiers or modifier.get("type") not in ("ORDER_MODIFIER", "LIMIT_MODIFIER"):
            raise _refuse(f"a {str(modifier.get('type')).lower()}")
        for key in ("limit", "offset"):
            value = modifier.get(key)
            if value is not None and value.get("class") != "CONSTANT":
                raise _refuse("a LIMIT or OFFSET that is not a constant")
    aliases = {str(e.get("alias")) for e in node.get("select_list") or [] if e.get("alias")}
    # the asker's finishing query may name its own output columns in ORDER BY (and HAVING, as its WHERE)
    visible = set(columns) | aliases if modifiers else set(columns)
    parts = [node.get("select_list"), node.get("where_clause"), node.get("having"), node.get("modifiers")]
    for part in parts:
        for e in _expressions(part):
            _check_expression(e, visible)
    for e in _expressions(node.get("group_expressions")):
        _check_expression(e, set(columns) | aliases)
