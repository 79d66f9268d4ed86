"""Stage 2: the SQL surface is an allow-list. Every node of the query's syntax tree must be of a kind named here.

Anything else (``COLUMNS(...)``, ``#2``, lambdas, struct and list access, a function not listed, a new syntax form
a later sqlglot or DuckDB adds) is refused with ``PLAN_EXPRESSION_NOT_ALLOWED`` naming the construct, before
anything is bound. The same list, by DuckDB's own names, checks DuckDB's parse tree of the SQL a node runs
(:mod:`federation.planner.engine_tree`), so a form the two parsers read differently is refused too.

Each entry says why it is safe: it reads only the columns it names (each a plain catalog column, seen by the
identifier rule and the policies' column uses), its cost is linear in its inputs, its output is no larger than
its inputs, and it cannot fail on a value (casts, arithmetic and comparisons are proven total by
:mod:`federation.planner.totality`). The table in ``docs/sql-surface.md`` is generated from the entries and a
test keeps the two the same. The entries themselves are in :mod:`federation.planner.allow_list`.

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

from typing import cast

from sqlglot import exp

from hpf.federation.errors import PlanError
from hpf.federation.planner.allow_list import AGGREGATES, DATE_PARTS, FUNCTIONS, MAX_IN_LIST, MAX_PATTERN, NODES

MAX_DEPTH = 64  # levels of the syntax tree; every stage after this one may recurse safely


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
