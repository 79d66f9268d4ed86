"""Stage 2: resolve the table and columns against the catalog, and guard identifier columns.

Column references lose their table qualifier (there is only one table) and are lower-cased.
Unknown names are refused with the closest catalog names as a "did you mean".
"""

from __future__ import annotations

import difflib
import re

from sqlglot import exp

from hpf.federation.catalog import Catalog, ColumnClass, Table
from hpf.federation.errors import PlanError


def _did_you_mean(name: str, choices: list[str]) -> str | None:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    return f"did you mean {' or '.join(repr(c) for c in close)}?" if close else None


_NAME = re.compile(r"[a-z_][a-z0-9_]{0,63}")  # matched whole
_DIGIT_RUN = re.compile(r"\d{4}")


def shown_name(name: str) -> str:
    """A name the asker typed, quoted in a message only if it looks like a name: a value typed in double quotes
    by mistake (``"310101199001011234" = 1``) is not echoed.

    >>> shown_name("amount"), shown_name("310101199001011234"), shown_name("a b")
    ("'amount'", 'given', 'given')
    """
    return repr(name) if _NAME.fullmatch(name) and not _DIGIT_RUN.search(name) else "given"


def _unknown(what: str, name: str) -> str:
    shown = shown_name(name)
    return f"unknown {what} {shown}" if shown != "given" else f"unknown {what} (the name given is not shown)"


def resolve_table(tree: exp.Select, catalog: Catalog) -> tuple[str, Table]:
    """The catalog table the query reads; refuse unknown tables with a suggestion."""
    table_expr = tree.args["from_"].this
    name = table_expr.name.lower()
    table = catalog.tables.get(name)
    if table is None:
        raise PlanError(
            _unknown("table", name),
            code="PLAN_UNKNOWN_TABLE",
            hint=_did_you_mean(name, list(catalog.tables)) or f"tables are: {', '.join(sorted(catalog.tables))}",
        )
    return name, table


def resolve_columns(tree: exp.Select, table_name: str, table: Table) -> exp.Select:
    """Strip qualifiers, lower-case names, refuse unknown columns (select aliases are allowed)."""
    table_expr = tree.args["from_"].this
    alias = table_expr.alias.lower() if table_expr.alias else None
    allowed_qualifiers = {table_name} | ({alias} if alias else set())
    select_aliases = {e.alias.lower() for e in tree.expressions if isinstance(e, exp.Alias)}
    tree = tree.copy()
    table_expr = tree.args["from_"].this
    table_expr.set("alias", None)
    table_expr.set("this", exp.to_identifier(table_name))
    for col in list(tree.find_all(exp.Column)):
        qualifier = col.table.lower() if col.table else None
        if qualifier and qualifier not in allowed_qualifiers:
            raise PlanError(_unknown("table or alias", qualifier) + " in a column reference", code="PLAN_UNKNOWN_TABLE")
        name = col.name.lower()
        if isinstance(col.this, exp.Star):
            raise PlanError("SELECT * returns rows; the federation only returns aggregates", code="PLAN_ROW_LEVEL")
        if name not in table.columns:
            if name in select_aliases and not qualifier:
                col.replace(exp.column(name))
                continue
            raise PlanError(
                _unknown("column", name) + f" in table {table_name!r}",
                code="PLAN_UNKNOWN_COLUMN",
                hint=_did_you_mean(name, list(table.columns)) if shown_name(name) != "given" else None,
            )
        col.replace(exp.column(name))
    return tree


def _is_identifier_equality(col: exp.Column) -> bool:
    node: exp.Expression = col
    while isinstance(node.parent, exp.Paren):
        node = node.parent
    parent = node.parent
    if not isinstance(parent, exp.EQ):
        return False
    other = parent.expression if parent.this is node else parent.this
    other = other.unnest() if isinstance(other, exp.Paren) else other
    if not isinstance(other, exp.Literal) or not other.is_string:
        return False
    # the equality must sit in the WHERE clause, joined to it only through AND and parentheses
    up = parent.parent
    while isinstance(up, exp.And | exp.Paren):
        up = up.parent
    return isinstance(up, exp.Where) and isinstance(up.parent, exp.Select)  # not an aggregate's FILTER


def check_identifiers(tree: exp.Select, table_name: str, table: Table) -> exp.Select:
    """Identifier columns may appear only in a WHERE equality with a literal (``person_id = '...'``)."""
    for col in tree.find_all(exp.Column):
        column = table.columns.get(col.name)
        if column is None or column.column_class != ColumnClass.identifier:
            continue
        if not _is_identifier_equality(col):
            raise PlanError(
                f"{table_name}.{col.name} is an identifier column: it may appear only in a WHERE equality "
                "with a literal, never in an output, a group key, an aggregate or another condition",
                code="PLAN_IDENTIFIER_MISUSE",
                hint="count people with COUNT(*), or look one person up with `hpf lookup`",
            )
    return tree
