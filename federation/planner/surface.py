"""Stage 2: the SQL surface is an allow-list. Every node of the query's syntax tree must be of a kind named here.

Anything else (``COLUMNS(...)``, ``#2``, lambdas, struct and list access, a function not listed, a new syntax form
a later sqlglot or DuckDB adds) is refused with ``PLAN_EXPRESSION_NOT_ALLOWED`` naming the construct, before
anything is bound. The same list, by DuckDB's own names, checks DuckDB's parse tree of the SQL a node runs
(:mod:`federation.planner.engine_tree`), so a form the two parsers read differently is refused too.

Each entry says why it is safe: it reads only the columns it names (each a plain catalog column, seen by the
identifier rule and the policies' column uses), its cost is linear in its inputs, its output is no larger than
its inputs, and it cannot fail on a value (casts, arithmetic and comparisons are proven total by
:mod:`federation.planner.totality`). The table in ``docs/sql-surface.md`` is generated from these entries and a
test keeps the two the same.

>>> import sqlglot
>>> check_surface(sqlglot.parse_one("SELECT COUNT(*) FROM t WHERE year(d) = 2020", read="duckdb")).sql("duckdb")
'SELECT COUNT(*) FROM t WHERE YEAR(d) = 2020'
>>> try:
...     check_surface(sqlglot.parse_one("SELECT COUNT(*) FROM t WHERE COLUMNS('p') = 'x'", read="duckdb"))
... except Exception as err:
...     print(err.code, err.message)
PLAN_EXPRESSION_NOT_ALLOWED COLUMNS(...) is not part of the federation's SQL
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from sqlglot import exp

from hpf.federation.errors import PlanError

MAX_DEPTH = 64  # levels of the syntax tree; every stage after this one may recurse safely
MAX_IN_LIST = 1_000
MAX_PATTERN = 200  # characters of a LIKE pattern


@dataclass(frozen=True)
class Entry:
    """One allowed construct: how the docs show it, its DuckDB parse-tree names, and why it is safe."""

    shown: str
    duckdb: tuple[str, ...]
    why: str
    kind: str = "expression"  # clause | expression | function | aggregate


_LINEAR = "linear in its input, output no larger"


def _like_equals(shown: str, duckdb: str) -> Entry:
    """A comparison other than =, safe for the same reasons."""
    return Entry(shown, (duckdb,), "as =")


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
    exp.Ordered: Entry("ORDER BY item", (), "runs on the asker's side", "clause"),
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
    exp.GT: _like_equals(">", "COMPARE_GREATERTHAN"),
    exp.GTE: _like_equals(">=", "COMPARE_GREATERTHANOREQUALTO"),
    exp.LT: _like_equals("<", "COMPARE_LESSTHAN"),
    exp.LTE: _like_equals("<=", "COMPARE_LESSTHANOREQUALTO"),
    exp.NullSafeEQ: _like_equals("IS NOT DISTINCT FROM", "COMPARE_NOT_DISTINCT_FROM"),
    exp.NullSafeNEQ: _like_equals("IS DISTINCT FROM", "COMPARE_DISTINCT_FROM"),
    exp.Between: _like_equals("BETWEEN", "COMPARE_BETWEEN"),
    exp.In: Entry(
        "IN (constants)",
        ("COMPARE_IN", "COMPARE_NOT_IN"),
        f"a list of at most {MAX_IN_LIST} constants; no subquery, no UNNEST",
    ),
    exp.Is: Entry("IS [NOT] NULL, IS TRUE/FALSE", ("OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL"), "total"),
    exp.Add: Entry("+", ("+",), "computed wide (HUGEINT, DECIMAL(38,s)); a range that could overflow is refused"),
    exp.Sub: Entry("-", ("-",), "as +"),
    exp.Mul: Entry(
        "*",
        ("*",),
        "as +; under a minimum group size, policies take a product of two row values as a value only of "
        "measured quantities (POLICY_AGGREGATE_PRODUCT)",
    ),
    exp.Neg: Entry("unary -", ("-",), "as +"),
    exp.Div: Entry("/", ("/",), "DOUBLE; division by zero gives infinity or NaN, never an error"),
    exp.Mod: Entry("% positive constant", ("%",), "integers only, by a positive constant divisor: never fails"),
    exp.IntDiv: Entry("// positive constant", ("//",), "as %"),
    exp.Case: Entry("CASE ... END", ("CASE_EXPR",), "total; conditions are booleans, values one type family"),
    exp.If: Entry("WHEN ... THEN, IF(c, a, b)", (), "a branch of CASE"),
    exp.Cast: Entry(
        "CAST(x AS t), x::t",
        ("OPERATOR_CAST", "TYPE"),
        "only where it cannot fail on any value of x (a constant, or a widening the totality stage proves)",
    ),
    exp.TryCast: Entry("TRY_CAST(x AS t)", ("OPERATOR_CAST",), "never fails: NULL where x does not convert"),
    exp.DataType: Entry("a type name", ("TYPE",), "the scalar types of the catalog", "clause"),
    exp.DataTypeParam: Entry("DECIMAL(p, s)", (), "precision and scale", "clause"),
    exp.Like: Entry("LIKE 'pattern'", ("~~", "!~~"), f"a constant pattern of at most {MAX_PATTERN} characters"),
    exp.ILike: Entry("ILIKE 'pattern'", ("~~*", "!~~*"), "as LIKE"),
    exp.Extract: Entry("EXTRACT(part FROM date)", ("date_part",), "a date part of a DATE: a small integer"),
    exp.Var: Entry("a date part name", (), "year, quarter, month, day, dow, isodow (EXTRACT)", "clause"),
}

# Scalar functions, by DuckDB name, with the sqlglot classes that parse to them.
FUNCTIONS: dict[str, tuple[tuple[type[exp.Expression], ...], Entry]] = {
    "year": ((exp.Year,), Entry("YEAR(date)", ("year",), "a date part", "function")),
    "quarter": ((exp.Quarter,), Entry("QUARTER(date)", ("quarter",), "a date part", "function")),
    "month": ((exp.Month,), Entry("MONTH(date)", ("month",), "a date part", "function")),
    "day": (
        (exp.Day, exp.DayOfMonth),
        Entry("DAY(date), DAYOFMONTH(date)", ("day", "dayofmonth"), "a date part", "function"),
    ),
    "dayofweek": ((exp.DayOfWeek,), Entry("DAYOFWEEK(date)", ("dayofweek",), "a date part", "function")),
    "date_part": ((), Entry("DATE_PART('part', date)", ("date_part",), "a date part, the part a constant", "function")),
    "make_date": (
        (exp.DateFromParts,),
        Entry(
            "MAKE_DATE(y, m, d) of constants", ("make_date",), "constants only: computed once, at plan time", "function"
        ),
    ),
    "abs": ((exp.Abs,), Entry("ABS(x)", ("abs",), "computed wide, as +", "function")),
    "sign": ((exp.Sign,), Entry("SIGN(x)", ("sign",), "-1, 0 or 1", "function")),
    "coalesce": ((exp.Coalesce,), Entry("COALESCE(a, b, ...)", ("OPERATOR_COALESCE",), "one type family", "function")),
    "nullif": ((exp.Nullif,), Entry("NULLIF(a, b)", ("nullif",), "one type family", "function")),
    "greatest": ((exp.Greatest,), Entry("GREATEST(a, b, ...)", ("greatest",), "one type family", "function")),
    "least": ((exp.Least,), Entry("LEAST(a, b, ...)", ("least",), "one type family", "function")),
    "length": ((exp.Length,), Entry("LENGTH(text)", ("length",), _LINEAR, "function")),
    "lower": ((exp.Lower,), Entry("LOWER(text)", ("lower",), _LINEAR, "function")),
    "upper": ((exp.Upper,), Entry("UPPER(text)", ("upper",), _LINEAR, "function")),
    "trim": ((exp.Trim,), Entry("TRIM(text)", ("trim",), _LINEAR, "function")),
    "concat": (
        (exp.DPipe, exp.Concat),
        Entry("a || b, CONCAT(a, b)", ("||", "concat"), "output the sum of its inputs' sizes", "function"),
    ),
    "substring": (
        (exp.Substring,),
        Entry("SUBSTRING(text, start, length)", ("substring",), "constant bounds; output no larger", "function"),
    ),
    "starts_with": ((exp.StartsWith,), Entry("STARTS_WITH(text, text)", ("starts_with",), _LINEAR, "function")),
    "ends_with": ((exp.EndsWith,), Entry("ENDS_WITH(text, text)", ("ends_with", "suffix"), _LINEAR, "function")),
    "contains": ((exp.Contains,), Entry("CONTAINS(text, text)", ("contains",), _LINEAR, "function")),
}

# The aggregates a plan can be split into (the split stage refuses every other aggregate with its own code).
AGGREGATES: dict[type[exp.Expression], Entry] = {
    exp.Count: Entry("COUNT(*), COUNT(x)", ("count_star", "count"), "additive", "aggregate"),
    exp.Sum: Entry("SUM(x)", ("sum",), "additive", "aggregate"),
    exp.Avg: Entry("AVG(x)", ("avg",), "SUM and COUNT", "aggregate"),
    exp.VariancePop: Entry("VAR_POP(x)", ("var_pop",), "SUM, SUM of squares, COUNT", "aggregate"),
    exp.Variance: Entry("VAR_SAMP(x), VARIANCE(x)", ("var_samp",), "as VAR_POP", "aggregate"),
    exp.StddevPop: Entry("STDDEV_POP(x)", ("stddev_pop",), "as VAR_POP", "aggregate"),
    exp.StddevSamp: Entry("STDDEV_SAMP(x)", ("stddev_samp",), "as VAR_POP", "aggregate"),
    exp.Stddev: Entry("STDDEV(x)", ("stddev_samp",), "as VAR_POP", "aggregate"),
}

DATE_PARTS = frozenset({"year", "yyyy", "quarter", "month", "mon", "day", "dayofmonth", "dow", "dayofweek", "isodow"})

_CLASS_TO_FUNCTION = {cls: name for name, (classes, _) in FUNCTIONS.items() for cls in classes}


def refuse(construct: str, hint: str | None = None) -> PlanError:
    return PlanError(
        f"{construct} is not part of the federation's SQL",
        code="PLAN_EXPRESSION_NOT_ALLOWED",
        hint=hint or "see the allowed SQL forms and functions in docs/sql-surface.md",
    )


def shown(node: exp.Expression) -> str:
    """How a construct is named in a refusal: its keyword or function name, never a literal's value."""
    if isinstance(node, exp.Anonymous):
        return f"function {str(node.this).upper()}(...)"
    if isinstance(node, exp.Func):
        return f"{node.sql_name()}(...)"
    return node.key.upper().replace("_", " ")


def masked_sql(node: exp.Expression) -> str:
    """``node`` as SQL with every literal shown as ``?``, for messages.

    >>> import sqlglot
    >>> masked_sql(sqlglot.parse_one("amount + 310101199001011234", read="duckdb"))
    'amount + ?'
    """
    masked = node.copy().transform(lambda n: exp.var("?") if isinstance(n, exp.Literal) else n)
    return masked.sql("duckdb")


def tree_depth(tree: exp.Expression) -> int:
    """The depth of the tree, without recursion (a deep tree is what is being guarded against).

    A chain of ANDs or of ORs counts as one level: every stage walks such a chain as a list (``conjuncts``),
    so a question may list many conditions. Any other nesting, a chain of ``+`` included, counts each level.
    """
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        for child in node.iter_expressions():
            same_chain = isinstance(node, exp.And | exp.Or) and type(child) is type(node)
            stack.append((child, depth if same_chain else depth + 1))
    return deepest


def conjuncts(node: exp.Expression) -> list[exp.Expression]:
    """The operands of a chain of ANDs (or of ORs), in order, without recursion."""
    out, stack = [], [node]
    while stack:
        item = stack.pop()
        if type(item) is type(node) and isinstance(item, exp.And | exp.Or):
            stack.extend([item.expression, item.this])
        else:
            out.append(item)
    return out


def check_depth(tree: exp.Expression) -> exp.Expression:
    if tree_depth(tree) <= MAX_DEPTH:
        return tree
    raise PlanError(
        f"the query nests deeper than {MAX_DEPTH} levels",
        code="PLAN_TOO_NESTED",
        hint="write fewer nested expressions, or ask two simpler questions",
    )


def _string_literal(node: exp.Expression | None) -> str | None:
    return node.this if isinstance(node, exp.Literal) and node.is_string else None


def _int_literal(node: exp.Expression | None) -> int | None:
    negative = isinstance(node, exp.Neg)
    if negative:
        assert node is not None
        node = node.this
    if isinstance(node, exp.Literal) and not node.is_string and node.this.isdigit():
        return -int(node.this) if negative else int(node.this)
    return None


def _check_node(node: exp.Expression, root: exp.Expression) -> None:
    """Refuse ``node`` unless the allow-list names its kind and its particular form is the allowed one."""
    kind = type(node)
    parent = node.parent
    if kind in AGGREGATES:
        if isinstance(node.this, exp.Distinct):
            raise refuse(f"{shown(node)} with DISTINCT")
        return
    if kind is exp.Star:
        if not isinstance(parent, exp.Count) or any(node.args.values()):
            raise refuse("* outside COUNT(*)")
        return
    name = _CLASS_TO_FUNCTION.get(kind)
    if isinstance(node, exp.Anonymous):
        name = str(node.this).lower()
        if name != "date_part":
            raise refuse(shown(node))
    if name is not None:
        _check_function(name, node)
        return
    if kind not in NODES:
        raise refuse(shown(node))
    if kind is exp.Select and node is not root:
        raise refuse("a nested SELECT")
    if kind is exp.Table and not isinstance(parent, exp.From):
        raise refuse("a table outside FROM")
    if kind is exp.Column and (
        node.args.get("db") or node.args.get("catalog") or not isinstance(node.this, exp.Identifier)
    ):
        raise refuse("a column path (struct field or schema-qualified name)")
    if kind is exp.Literal and not node.is_string:
        text = node.this
        if not text.replace(".", "", 1).isdigit():
            raise refuse("a number written in another notation", "write numbers as plain decimals (123.45)")
    if kind is exp.Var and not (isinstance(parent, exp.Extract) and node.name.lower() in DATE_PARTS):
        raise refuse("a bare keyword")
    if kind is exp.In:
        if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
            raise refuse("IN over a subquery or UNNEST")
        values = node.expressions
        if len(values) > MAX_IN_LIST or not all(_constant(v) for v in values):
            raise refuse(f"IN over anything but a list of at most {MAX_IN_LIST} constants")
    if kind in (exp.Like, exp.ILike):
        pattern = _string_literal(node.expression)
        if pattern is None or len(pattern) > MAX_PATTERN or node.args.get("escape"):
            raise refuse(
                f"{kind.__name__.upper()} with anything but a constant pattern of at most {MAX_PATTERN} characters"
            )
    if kind in (exp.Mod, exp.IntDiv):
        divisor = _int_literal(node.expression)
        if divisor is None or divisor <= 0:
            raise refuse(f"{'%' if kind is exp.Mod else '//'} by anything but a positive whole-number constant")
    if kind is exp.Is and not isinstance(node.expression, exp.Null | exp.Boolean):
        raise refuse("IS with anything but NULL, TRUE or FALSE")
    if kind is exp.Case and node.args.get("this") is not None and not node.args.get("ifs"):
        raise refuse("an empty CASE")


def _constant(node: exp.Expression) -> bool:
    if isinstance(node, exp.Neg):
        node = node.this
    if isinstance(node, exp.Cast):  # DATE '2020-01-01'
        node = node.this
    return isinstance(node, exp.Literal | exp.Null | exp.Boolean)


def _check_function(name: str, node: exp.Expression) -> None:
    if name in ("date_part",):
        args = node.expressions
        part = _string_literal(args[0]) if len(args) == 2 else None
        if part is None or part.lower() not in DATE_PARTS:
            raise refuse("DATE_PART with anything but a constant part (year, quarter, month, day, dow, isodow)")
    if name == "substring":
        bounds = [node.args.get("start"), node.args.get("length")]
        for bound in bounds:
            if bound is None:
                continue
            value = _int_literal(bound)
            if value is None or abs(value) > 2**31 - 1:
                raise refuse("SUBSTRING with anything but constant bounds")
    if name == "make_date" and not all(_constant(v) for v in node.args.values() if isinstance(v, exp.Expression)):
        raise refuse("MAKE_DATE of anything but constants")
    if name == "trim" and (node.args.get("expression") is not None or node.args.get("position")):
        raise refuse("TRIM with characters or a side")


def check_surface(tree: exp.Expression) -> exp.Expression:
    """Refuse the query unless every node of its tree is an allowed kind in an allowed form."""
    check_depth(tree)
    for node in tree.walk():
        _check_node(cast(exp.Expression, node), tree)
    return tree


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


DOC_START, DOC_END = "<!-- allow-list: generated from federation/planner/surface.py -->", "<!-- end of allow-list -->"


def markdown_table() -> str:
    """The allow-list as the Markdown table docs/sql-surface.md holds (``python scripts/gen_sql_surface.py``)."""
    rows = ["| construct | kind | DuckDB's name for it | why it is safe |", "|---|---|---|---|"]

    def row(entry: Entry) -> str:
        names = ", ".join(f"`{n}`" for n in entry.duckdb) or "(structure)"
        return f"| `{entry.shown}` | {entry.kind} | {names} | {entry.why} |"

    rows += [row(e) for e in NODES.values()]
    rows += [row(entry) for _, entry in FUNCTIONS.values()]
    rows += [row(e) for e in AGGREGATES.values()]
    return "\n".join([DOC_START, *rows, DOC_END])
