"""The allow-list: every construct the federation's SQL admits, how the docs show it, its DuckDB parse-tree names,
why it is safe, and how a region whose rows live in PostgreSQL or behind Spark runs it exactly (``postgres``,
``spark``; "refused: ..." where it cannot, see :mod:`federation.planner.dialects` and
:mod:`federation.planner.spark_dialect`).

:mod:`federation.planner.surface` checks a question's tree against it; :mod:`federation.planner.engine_tree`
checks DuckDB's parse tree by the DuckDB names (:func:`duckdb_names`); ``docs/sql-surface.md`` holds it as a
table (:func:`markdown_table`, ``python scripts/gen_sql_surface.py``), and a test keeps the two the same.

>>> "PostgreSQL" in markdown_table().splitlines()[1] and "Spark" in markdown_table().splitlines()[1]
True
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

MAX_IN_LIST = 1_000
MAX_PATTERN = 200  # characters of a LIKE pattern


@dataclass(frozen=True)
class Entry:
    """One allowed construct: how the docs show it, its DuckDB parse-tree names, why it is safe, and how a region
    whose rows live in PostgreSQL or behind Spark runs it exactly ("refused: ..." where it cannot)."""

    shown: str
    duckdb: tuple[str, ...]
    why: str
    kind: str = "expression"  # clause | expression | function | aggregate
    postgres: str = "as is"  # how a PostgreSQL region runs it (federation.planner.dialects), or why it is refused
    spark: str = "as is"  # how a Spark region runs it (federation.planner.spark_dialect), or why it is refused


_LINEAR = "linear in its input, output no larger"
_COLLATE = 'as is; text compared COLLATE "C" (by code point, as DuckDB)'


_SPARK_PART = "the part's function (DAYOFMONTH for day) AS BIGINT; dow as DAYOFWEEK - 1, isodow as WEEKDAY + 1"
_BINARY = "as is; text compared by code point (the session's UTF8_BINARY collation)"


def _like_equals(shown: str, duckdb: str, postgres: str = "as is", spark: str = "as is") -> Entry:
    """A comparison other than =, safe for the same reasons."""
    return Entry(shown, (duckdb,), "as =", postgres=postgres, spark=spark)


# sqlglot node types, by class. Functions are listed separately below (by the name DuckDB knows them by).
NODES: dict[type[exp.Expression], Entry] = {
    exp.Select: Entry(
        "SELECT ... FROM table", ("SELECT_NODE", "BASE_TABLE"), "the one statement, over one table", "clause"
    ),
    exp.From: Entry("FROM", (), "names one catalog table (checked by the shape stage)", "clause"),
    exp.Table: Entry("table name", (), "a catalog table, no schema, no table function", "clause"),
    exp.TableAlias: Entry("table alias", (), "a name for the one table", "clause"),
    exp.Where: Entry("WHERE", (), "a condition over one row", "clause"),
    exp.Group: Entry("GROUP BY", (), "keys with declared finite domains (the domain stage)", "clause"),
    exp.Having: Entry("HAVING", (), "runs on the asker's side over the decrypted groups", "clause"),
    exp.Order: Entry("ORDER BY", ("ORDER_MODIFIER",), "runs on the asker's side", "clause"),
    exp.Ordered: Entry(
        "ORDER BY item",
        (),
        "runs on the asker's side",
        "clause",
        spark="as is; in the DP row cap's window NULLS LAST both ways, as DuckDB (Spark's ascending puts them first)",
    ),
    exp.Limit: Entry("LIMIT n", ("LIMIT_MODIFIER",), "a constant; runs on the asker's side", "clause"),
    exp.Offset: Entry("OFFSET n", (), "a constant; runs on the asker's side", "clause"),
    exp.Alias: Entry("AS name", (), "names an output", "clause"),
    exp.Identifier: Entry("name", (), "a plain name (column, table or alias)", "clause"),
    exp.Filter: Entry("AGG(...) FILTER (WHERE c)", (), "an aggregate over the rows c selects", "clause"),
    exp.Column: Entry("column", ("COLUMN_REF",), "a plain catalog column (one name; the resolve stage checks it)"),
    exp.Literal: Entry("number or 'string'", ("CONSTANT",), "a constant: any failure happens at plan time"),
    exp.Null: Entry("NULL", ("CONSTANT",), "a constant"),
    exp.Boolean: Entry("TRUE, FALSE", ("CONSTANT",), "a constant"),
    exp.Paren: Entry("( ... )", (), "grouping only"),
    exp.And: Entry("AND", ("CONJUNCTION_AND",), "boolean, total"),
    exp.Or: Entry("OR", ("CONJUNCTION_OR",), "boolean, total"),
    exp.Not: Entry("NOT", ("OPERATOR_NOT",), "boolean, total"),
    exp.EQ: Entry("=", ("COMPARE_EQUAL",), "total between operands of one type family (totality stage)"),
    exp.NEQ: _like_equals("<>, !=", "COMPARE_NOTEQUAL"),
    exp.GT: _like_equals(">", "COMPARE_GREATERTHAN", _COLLATE, _BINARY),
    exp.GTE: _like_equals(">=", "COMPARE_GREATERTHANOREQUALTO", _COLLATE, _BINARY),
    exp.LT: _like_equals("<", "COMPARE_LESSTHAN", _COLLATE, _BINARY),
    exp.LTE: _like_equals("<=", "COMPARE_LESSTHANOREQUALTO", _COLLATE, _BINARY),
    exp.NullSafeEQ: _like_equals("IS NOT DISTINCT FROM", "COMPARE_NOT_DISTINCT_FROM"),
    exp.NullSafeNEQ: _like_equals("IS DISTINCT FROM", "COMPARE_DISTINCT_FROM"),
    exp.Between: _like_equals("BETWEEN", "COMPARE_BETWEEN", _COLLATE, _BINARY),
    exp.In: Entry(
        "IN (constants)",
        ("COMPARE_IN", "COMPARE_NOT_IN"),
        f"a list of at most {MAX_IN_LIST} constants; no subquery, no UNNEST",
    ),
    exp.Is: Entry("IS [NOT] NULL, IS TRUE/FALSE", ("OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL"), "total"),
    exp.Add: Entry(
        "+",
        ("+",),
        "computed wide (HUGEINT, DECIMAL(38,s)); a range that could overflow is refused",
        spark="as is (ANSI mode: overflow fails); refused for a DECIMAL result of more than 6 fraction digits",
    ),
    exp.Sub: Entry("-", ("-",), "as +", spark="as +"),
    exp.Mul: Entry(
        "*",
        ("*",),
        "as +; under a minimum group size, policies take a product of two row values as a value only of "
        "measured quantities (POLICY_AGGREGATE_PRODUCT)",
        spark="as +",
    ),
    exp.Neg: Entry("unary -", ("-",), "as +"),
    exp.Div: Entry(
        "/",
        ("/",),
        "DOUBLE; division by zero gives infinity or NaN, never an error",
        postgres="refused: PostgreSQL fails on a division by zero",
        spark="of integers: DOUBLEs divided, a zero divisor giving DuckDB's infinities or NaN; refused otherwise",
    ),
    exp.Mod: Entry(
        "% positive constant",
        ("%",),
        "integers only, by a positive constant divisor: never fails",
        postgres="as is (both truncate)",
        spark="as is (both truncate)",
    ),
    exp.IntDiv: Entry(
        "// positive constant",
        ("//",),
        "as %",
        postgres="DIV(a, b), truncating as DuckDB",
        spark="a DIV b of integers up to BIGINT, truncating as DuckDB; refused for HUGEINT",
    ),
    exp.Case: Entry("CASE ... END", ("CASE_EXPR",), "total; conditions are booleans, values one type family"),
    exp.If: Entry("WHEN ... THEN, IF(c, a, b)", (), "a branch of CASE"),
    exp.Cast: Entry(
        "CAST(x AS t), x::t",
        ("OPERATOR_CAST", "TYPE"),
        "only where it cannot fail on any value of x (a constant, or a widening the totality stage proves)",
        postgres="HUGEINT as NUMERIC(39,0), TINYINT as SMALLINT; a number to BOOLEAN as x <> 0, a BOOLEAN to a "
        "number through INTEGER, a DATE to text by TO_CHAR (ISO); refused: a DOUBLE to text (printed differently)",
        spark="HUGEINT as DECIMAL(38,0), VARCHAR as STRING; a DECIMAL to an integer through DECIMAL(38,0) "
        "(rounding as DuckDB); a number to BOOLEAN as x <> 0, a BOOLEAN to a number through INT; text only as a "
        "plain literal; refused: a DOUBLE to anything else, a DECIMAL or HUGEINT to DOUBLE (rounded differently)",
    ),
    exp.TryCast: Entry(
        "TRY_CAST(x AS t)",
        ("OPERATOR_CAST",),
        "never fails: NULL where x does not convert",
        postgres="refused: PostgreSQL has no cast that gives NULL where a value does not convert",
        spark="refused: Spark's TRY_CAST reads text by other rules",
    ),
    exp.DataType: Entry("a type name", ("TYPE",), "the scalar types of the catalog", "clause"),
    exp.DataTypeParam: Entry("DECIMAL(p, s)", (), "precision and scale", "clause"),
    exp.Like: Entry(
        "LIKE 'pattern'",
        ("~~", "!~~"),
        f"a constant pattern of at most {MAX_PATTERN} characters",
        postgres="LIKE ... ESCAPE '' (DuckDB has no escape character)",
        spark="LIKE ... ESCAPE of a character the pattern lacks (Spark's default escape is a backslash)",
    ),
    exp.ILike: Entry(
        "ILIKE 'pattern'",
        ("~~*", "!~~*"),
        "as LIKE",
        postgres="refused: case folding follows the database's locale",
        spark="refused: Spark folds case by Java's rules",
    ),
    exp.Extract: Entry(
        "EXTRACT(part FROM date)",
        ("date_part",),
        "a date part of a DATE: a small integer",
        postgres="CAST(EXTRACT(part FROM d) AS BIGINT)",
        spark=_SPARK_PART,
    ),
    exp.Var: Entry("a date part name", (), "year, quarter, month, day, dow, isodow (EXTRACT)", "clause"),
}

_PART = "CAST(EXTRACT(part FROM d) AS BIGINT)"
_SPARK_CASE = "refused: Spark maps case by Java's rules (ß to SS), DuckDB by its own"


def _part(shown: str, names: tuple[str, ...], why: str = "a date part") -> Entry:
    return Entry(shown, names, why, "function", _PART, _SPARK_PART)


def _text(shown: str, names: tuple[str, ...], postgres: str = "as is", spark: str = "as is") -> Entry:
    return Entry(shown, names, _LINEAR, "function", postgres, spark)


# Scalar functions, by DuckDB name, with the sqlglot classes that parse to them.
FUNCTIONS: dict[str, tuple[tuple[type[exp.Expression], ...], Entry]] = {
    "year": ((exp.Year,), _part("YEAR(date)", ("year",))),
    "quarter": ((exp.Quarter,), _part("QUARTER(date)", ("quarter",))),
    "month": ((exp.Month,), _part("MONTH(date)", ("month",))),
    "day": ((exp.Day, exp.DayOfMonth), _part("DAY(date), DAYOFMONTH(date)", ("day", "dayofmonth"))),
    "dayofweek": ((exp.DayOfWeek,), _part("DAYOFWEEK(date)", ("dayofweek",))),
    "date_part": ((), _part("DATE_PART('part', date)", ("date_part",), "a date part, the part a constant")),
    "make_date": (
        (exp.DateFromParts,),
        Entry(
            "MAKE_DATE(y, m, d) of constants",
            ("make_date",),
            "constants only: computed once, at plan time",
            "function",
            "MAKE_DATE(y, m, d)",
            "MAKE_DATE(y, m, d)",
        ),
    ),
    "abs": ((exp.Abs,), Entry("ABS(x)", ("abs",), "computed wide, as +", "function")),
    "sign": (
        (exp.Sign,),
        Entry(
            "SIGN(x)",
            ("sign",),
            "-1, 0 or 1",
            "function",
            "CASE over x > 0, x < 0; refused over a DOUBLE",
            "CASE over x > 0, x < 0, x = 0 (Spark's SIGN is a DOUBLE); refused over a DOUBLE",
        ),
    ),
    "coalesce": ((exp.Coalesce,), Entry("COALESCE(a, b, ...)", ("OPERATOR_COALESCE",), "one type family", "function")),
    "nullif": ((exp.Nullif,), Entry("NULLIF(a, b)", ("nullif",), "one type family", "function")),
    "greatest": (
        (exp.Greatest,),
        Entry("GREATEST(a, b, ...)", ("greatest",), "one type family", "function", _COLLATE, _BINARY),
    ),
    "least": ((exp.Least,), Entry("LEAST(a, b, ...)", ("least",), "one type family", "function", _COLLATE, _BINARY)),
    "length": ((exp.Length,), _text("LENGTH(text)", ("length",))),
    "lower": (
        (exp.Lower,),
        _text("LOWER(text)", ("lower",), "refused: case mapping follows the database's locale", _SPARK_CASE),
    ),
    "upper": (
        (exp.Upper,),
        _text("UPPER(text)", ("upper",), "refused: case mapping follows the database's locale", _SPARK_CASE),
    ),
    "trim": (
        (exp.Trim,),
        _text(
            "TRIM(text)",
            ("trim",),
            "BTRIM(text, spaces): the Unicode space separators DuckDB removes (PostgreSQL: U+0020 alone)",
            spark="TRIM(BOTH <every Unicode space separator> FROM x): DuckDB strips them all, Spark's TRIM only U+0020",
        ),
    ),
    "concat": (
        (exp.DPipe, exp.Concat),
        Entry(
            "a || b, CONCAT(a, b)",
            ("||", "concat"),
            "output the sum of its inputs' sizes",
            "function",
            "PostgreSQL's CONCAT (skips NULLs) or ||, each operand as DuckDB writes it: a BOOLEAN CAST AS TEXT "
            "(not t), a DATE by TO_CHAR (ISO); refused with a DOUBLE operand",
            "CONCAT_WS('', ...) (skips NULLs; Spark's CONCAT gives NULL) or ||, each operand CAST AS STRING "
            "(as DuckDB writes it); refused with a DOUBLE operand",
        ),
    ),
    "substring": (
        (exp.Substring,),
        Entry(
            "SUBSTRING(text, start, length)",
            ("substring",),
            "constant bounds; output no larger",
            "function",
            "as is for a start of at least 1; refused otherwise (DuckDB counts a start below 1 from the end)",
            "as is for a start of at least 1; refused otherwise (the engines count a start of 0 differently)",
        ),
    ),
    "starts_with": ((exp.StartsWith,), _text("STARTS_WITH(text, text)", ("starts_with",), spark="STARTSWITH(a, b)")),
    "ends_with": (
        (exp.EndsWith,),
        _text("ENDS_WITH(text, text)", ("ends_with", "suffix"), "RIGHT(a, LENGTH(b)) = b", "ENDSWITH(a, b)"),
    ),
    "contains": ((exp.Contains,), _text("CONTAINS(text, text)", ("contains",), "STRPOS(a, b) > 0", "CONTAINS(a, b)")),
}

# The aggregates a plan can be split into (the split stage refuses every other aggregate with its own code).
AGGREGATES: dict[type[exp.Expression], Entry] = {
    exp.Count: Entry("COUNT(*), COUNT(x)", ("count_star", "count"), "additive", "aggregate"),
    exp.Sum: Entry(
        "SUM(x)",
        ("sum",),
        "additive",
        "aggregate",
        spark="SUM(CAST(x AS DECIMAL(38, s))): DuckDB's HUGEINT (read back as int) or DECIMAL(38,s); refused over a "
        "DOUBLE, and where DuckDB's answer holds a DECIMAL of scale 0",
    ),
    exp.Avg: Entry("AVG(x)", ("avg",), "SUM and COUNT", "aggregate"),
    exp.VariancePop: Entry("VAR_POP(x)", ("var_pop",), "SUM, SUM of squares, COUNT", "aggregate"),
    exp.Variance: Entry("VAR_SAMP(x), VARIANCE(x)", ("var_samp",), "as VAR_POP", "aggregate"),
    exp.StddevPop: Entry("STDDEV_POP(x)", ("stddev_pop",), "as VAR_POP", "aggregate"),
    exp.StddevSamp: Entry("STDDEV_SAMP(x)", ("stddev_samp",), "as VAR_POP", "aggregate"),
    exp.Stddev: Entry("STDDEV(x)", ("stddev_samp",), "as VAR_POP", "aggregate"),
}

DATE_PARTS = frozenset({"year", "yyyy", "quarter", "month", "mon", "day", "dayofmonth", "dow", "dayofweek", "isodow"})


def duckdb_names() -> dict[str, frozenset[str]]:
    """The DuckDB parse-tree names the allow-list admits, by what they name: classes/types and functions."""
    types: set[str] = set()
    functions: set[str] = set()
    for entry in NODES.values():
        for n in entry.duckdb:
            (types if n.isupper() and n not in ("+", "-", "*", "/", "%", "//") else functions).add(n)
    for _, entry in FUNCTIONS.values():
        for n in entry.duckdb:
            (types if n.isupper() else functions).add(n)
    aggregates = {n for entry in AGGREGATES.values() for n in entry.duckdb}
    return {"types": frozenset(types), "functions": frozenset(functions), "aggregates": frozenset(aggregates)}


DOC_START = "<!-- allow-list: generated from federation/planner/allow_list.py -->"
DOC_END = "<!-- end of allow-list -->"


def markdown_table() -> str:
    """The allow-list as the Markdown table docs/sql-surface.md holds (``python scripts/gen_sql_surface.py``)."""
    rows = [
        "| construct | kind | DuckDB's name for it | why it is safe | PostgreSQL | Spark |",
        "|---|---|---|---|---|---|",
    ]

    def row(entry: Entry) -> str:
        names = ", ".join(f"`{n}`" for n in entry.duckdb) or "(structure)"
        return f"| `{entry.shown}` | {entry.kind} | {names} | {entry.why} | {entry.postgres} | {entry.spark} |"

    rows += [row(e) for e in NODES.values()]
    rows += [row(entry) for _, entry in FUNCTIONS.values()]
    rows += [row(e) for e in AGGREGATES.values()]
    return "\n".join([DOC_START, *rows, DOC_END])
