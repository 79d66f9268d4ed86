"""Stage 1: parse the SQL and refuse every shape the federation cannot answer.

Each check is a small pure function: expression in, expression out (or a PlanError).

>>> tree = parse("SELECT COUNT(*) FROM deposits")
>>> check_shape(tree).sql("duckdb")
'SELECT COUNT(*) FROM deposits'
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import cast

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from hpf.federation.errors import PlanError
from hpf.federation.planner.surface import check_depth

MAX_SQL_CHARS = 20_000
MAX_NUMBER_CHARS = 80  # HUGEINT has 39 digits, DECIMAL(38, s) 38 and a point
MAX_NESTING = 24  # parentheses and CASE ... END inside each other; the parser recurses about 20 frames a level
_DUCKDB = sqlglot.Dialect.get_or_raise("duckdb")
_OPEN = frozenset({TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE, TokenType.CASE})
_CLOSE = frozenset({TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE, TokenType.END})

# sqlglot's names (what aggregate_name gives): QUANTILE_CONT parses as percentilecont, MIN_BY as argmin ...
NOT_ADDITIVE = frozenset(
    {
        "min",
        "max",
        "median",
        "mode",
        "quantile",
        "percentilecont",
        "percentiledisc",
        "argmin",
        "argmax",
        "first",
        "last",
        "anyvalue",
    }
)


def parse(sql: str) -> exp.Expression:
    """Parse one DuckDB-dialect statement; syntax errors name the line and column, not the text."""
    if len(sql) > MAX_SQL_CHARS:
        raise PlanError(f"the query is longer than {MAX_SQL_CHARS} characters", code="PLAN_TOO_LONG")
    if not sql.strip():
        raise PlanError("the query is empty", code="PLAN_SYNTAX")
    too_nested = PlanError(
        f"the query nests parentheses or CASE more than {MAX_NESTING} levels deep",
        code="PLAN_TOO_NESTED",
        hint="write fewer nested expressions, or ask two simpler questions",
    )
    try:
        depth = 0
        for token in _DUCKDB.tokenize(sql):  # the tokenizer does not recurse; the parser does
            depth += (token.token_type in _OPEN) - (token.token_type in _CLOSE)
            if depth > MAX_NESTING:
                raise too_nested
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except RecursionError:  # a chain of prefix operators (NOT NOT ..., - - ...) can still nest the parser
        raise too_nested from None
    except ParseError as err:
        first = err.errors[0] if err.errors else {}
        where = f" at line {first.get('line')}, column {first.get('col')}" if first.get("line") else ""
        desc = first.get("description") or "invalid SQL"
        raise PlanError(f"syntax error{where}: {desc}", code="PLAN_SYNTAX") from None
    except TokenError:
        raise PlanError("syntax error: the query cannot be tokenized (unclosed quote?)", code="PLAN_SYNTAX") from None
    if len(statements) != 1:
        raise PlanError("send exactly one SQL statement", code="PLAN_MULTIPLE_STATEMENTS")
    tree = check_depth(cast(exp.Expression, statements[0]))  # long operator chains nest without parentheses
    for literal in tree.find_all(exp.Literal):
        if not literal.is_string and len(literal.this) > MAX_NUMBER_CHARS:
            raise PlanError(
                f"a number in the query is longer than {MAX_NUMBER_CHARS} characters",
                code="PLAN_EXPRESSION_NOT_ALLOWED",
                hint="numbers must fit HUGEINT or DECIMAL(38, s)",
            )
    return tree


_LITERALS = (exp.Literal, exp.RawString, exp.National, exp.UnicodeString, exp.HexString, exp.ByteString, exp.BitString)


@lru_cache(maxsize=1024)
def shape_fingerprint(sql: str) -> str:
    """Hex SHA-256 of the query with every literal replaced by ``?``: names the question, never its values.

    An audit log keeps this, never the SQL: a literal may be an identifier, and an unkeyed hash of an
    enumerable identifier would give it away. Unparseable SQL has no fingerprint ("").

    >>> a = shape_fingerprint("SELECT COUNT(*) FROM t WHERE a = 'x'")
    >>> a == shape_fingerprint("select count(*) from t where a='y'"), a == shape_fingerprint("SELECT 1")
    (True, False)
    >>> raw, national = "SELECT COUNT(*) FROM t WHERE a = $$z$$", "SELECT COUNT(*) FROM t WHERE a = N'z'"
    >>> a == shape_fingerprint(raw) == shape_fingerprint(national)
    True
    >>> a == shape_fingerprint("SELECT COUNT(*) /* 310101199001011234 */ FROM t WHERE a = 'x'")
    True
    """
    try:
        tree = parse(sql)
    except PlanError:
        return ""
    masked = tree.transform(lambda node: exp.Placeholder() if isinstance(node, _LITERALS) else node)
    text = masked.sql("duckdb", normalize=True, comments=False)
    if "'" in text or "$" in text:  # a kind of literal not masked above: no fingerprint rather than a leak
        return ""
    return hashlib.sha256(text.encode()).hexdigest()


def check_shape(tree: exp.Expression) -> exp.Select:
    """Refuse non-SELECTs, set operations, CTEs, joins, subqueries, windows and DISTINCT projections."""
    if isinstance(tree, exp.SetOperation):
        raise PlanError(
            "UNION, INTERSECT and EXCEPT are not supported",
            code="PLAN_SET_OPERATION",
            hint="run each SELECT on its own",
        )
    if not isinstance(tree, exp.Select):
        raise PlanError(
            f"only SELECT queries can be federated, not {tree.key.upper()}",
            code="PLAN_NOT_SELECT",
        )
    if tree.args.get("with_"):
        raise PlanError("WITH (common table expressions) is not supported", code="PLAN_CTE")
    if tree.args.get("joins") or tree.args.get("laterals"):
        raise PlanError(
            "joins are not supported: each region's rows stay in that region, so tables cannot be combined",
            code="PLAN_JOIN",
            hint="aggregate each table separately",
        )
    from_ = tree.args.get("from_")
    if from_ is None:
        raise PlanError("the query needs a FROM clause naming one catalog table", code="PLAN_NO_TABLE")
    if not isinstance(from_.this, exp.Table) or from_.this.args.get("db") or from_.this.args.get("catalog"):
        raise PlanError("FROM must name one catalog table", code="PLAN_NO_TABLE")
    if not isinstance(from_.this.this, exp.Identifier):
        raise PlanError("table functions are not supported in FROM; name a catalog table", code="PLAN_NO_TABLE")
    for node in tree.walk():
        if node is tree:
            continue
        if isinstance(node, exp.Select | exp.Subquery | exp.SetOperation | exp.Exists):
            raise PlanError("subqueries are not supported", code="PLAN_SUBQUERY", hint="ask two queries")
        if isinstance(node, exp.Window):
            raise PlanError("window functions are not supported", code="PLAN_WINDOW")
        if isinstance(node, exp.Star) and not isinstance(node.parent, exp.Count):
            raise PlanError(
                "SELECT * returns rows; the federation only returns aggregates",
                code="PLAN_ROW_LEVEL",
                hint="ask for COUNT(*), SUM(col), AVG(col) ... with GROUP BY",
            )
        if isinstance(node, exp.Placeholder | exp.Parameter):
            raise PlanError("query parameters are not supported; write the values in", code="PLAN_PARAMETER")
    for key, what in (("qualify", "QUALIFY"), ("sample", "TABLESAMPLE"), ("into", "INTO"), ("windows", "WINDOW")):
        if tree.args.get(key):
            raise PlanError(f"{what} is not supported", code="PLAN_UNSUPPORTED_CLAUSE")
    if tree.args.get("distinct"):
        raise PlanError(
            "SELECT DISTINCT returns rows; the federation only returns aggregates",
            code="PLAN_ROW_LEVEL",
            hint="use GROUP BY on a column with a declared domain",
        )
    if tree.args.get("pivots"):
        raise PlanError("PIVOT is not supported", code="PLAN_UNSUPPORTED_CLAUSE")
    return tree


def aggregate_name(node: exp.Expression, duckdb_aggregates: frozenset[str]) -> str | None:
    """The lower-case name of an aggregate call (known to sqlglot or to DuckDB), else None."""
    if isinstance(node, exp.AggFunc):
        return node.key.lower()
    if isinstance(node, exp.Anonymous) and str(node.this).lower() in duckdb_aggregates:
        return str(node.this).lower()
    return None
