"""When a product of two row values is a value a minimum group size can count, and when it is a condition.

With a minimum group size k above 1, an aggregate's argument must be a value on the rows it covers and NULL on
the others, so that its own count of values is the number of rows k judges (:func:`policies.uses.k_countable`).
A product of two row values keeps that count (it is NULL exactly where a factor is), but a factor can still
decide which rows add anything: ``SUM(amount * flag)`` over a column ``flag`` of 0 and 1 is the sum of the
flagged rows' amounts, and with ``SUM(amount)`` beside it, ``SUM(amount * (1 - flag))`` is too, while k sees every
row of the group. So is a factor that computes a condition (``amount * (x > 3)::INTEGER``, a CASE, SIGN,
NULLIF), a factor of a category's codes (weights that sum each category apart), and a column multiplied by
itself (its powers single out rows by value).

A product of two row values is a value only when (an allow-list):

- every factor is a *plain value*: columns and number constants under ``+ - *``, unary minus, parentheses and
  casts of numbers to HUGEINT, DOUBLE or DECIMAL(38, s) (what the planner's wide arithmetic writes); nothing that
  compares, chooses (CASE, IF), rounds a condition into a number or calls a function;
- every column in it is a *measured quantity* by the catalog's own declaration: it has ``bounds`` (the range a
  differentially private sum clamps it into) that hold more than two values at its scale, and no group-by
  ``domain`` (a category is grouped or filtered on, where k applies);
- no column stands in both factors.

A variance (VAR_POP, VAR_SAMP, STDDEV_POP, STDDEV_SAMP) sums its argument's square as well, and the square of
``x + flag`` holds ``2 * x * flag``: beside ``VAR_POP(x)`` and ``SUM(flag)`` it is the flagged rows' sum. So
under a minimum group size the square is judged as the product of the argument with itself
(:func:`square_problem`): an argument of one column is the variance the rule grants (its square multiplies
nothing else), and one of several columns must be a sum of plain values of measured quantities, since its
square multiplies every two of them (a product inside it would multiply each of its columns by itself).

Overflow is not this rule's concern: the planner proves every product total before any policy sees it
(``PLAN_MAY_OVERFLOW`` otherwise). What it cannot see: the catalog's bounds are declarations, enforced only under
differential privacy, and count the values they hold, not those the data holds, so a column of two values
whose bounds hold more would pass (0 and 1 declared wider, 0.00 and 1.00 in DECIMAL(3,2) bounds [0, 1], -1 and 1
in their own bounds [-1, 1]; ``hpf init`` suggests no bounds for such a column); and a product of measured
quantities still weighs rows by their values, which exact answers accept as they accept differencing two
answers (see docs/privacy.md); differential privacy removes both.

>>> import sqlglot
>>> facts = {"price": ColumnFacts("DECIMAL(8,2)", (0, 100000), False),
...          "discount": ColumnFacts("DECIMAL(3,2)", (0, 0.1), False),
...          "late": ColumnFacts("TINYINT", (0, 1), False), "note": ColumnFacts("INTEGER", None, False)}
>>> def judge(sql):
...     problem = product_problem(sqlglot.parse_one(sql, read="duckdb"), facts)
...     return problem.what() if problem else "a value"
>>> judge("price * (1 - discount)")
'a value'
>>> judge("price * late")
'multiplies by column late, whose declared bounds allow only two values'
>>> judge("price * (discount > 0.05)::INTEGER")
'multiplies by a factor that computes a condition turned into a number by CAST over column discount'
>>> judge("price * note"), judge("price * (price - discount)")
('multiplies by column note, which declares no bounds', 'multiplies column price by itself')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from sqlglot import exp

_WIDE_TYPES = frozenset({exp.DataType.Type.INT128, exp.DataType.Type.DOUBLE})  # HUGEINT is INT128
_NUMERIC_TYPES = frozenset(exp.DataType.NUMERIC_TYPES - {exp.DataType.Type.BIT})
_NUMERIC_COLUMN = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "DOUBLE", "DECIMAL")


@dataclass(frozen=True)
class ColumnFacts:
    """What the catalog declares of a column that the policy's judgement of values reads."""

    type: str
    bounds: tuple[Decimal | int | float, Decimal | int | float] | None = None
    domain: bool = False  # has a group-by domain: a category

    def values(self) -> int | None:
        """How many values its bounds hold at its scale (None without bounds)."""
        if self.bounds is None:
            return None
        scale = int(self.type.rsplit(",", 1)[1].rstrip(")")) if self.type.startswith("DECIMAL(") else 0
        low, high = (Decimal(str(b)) for b in self.bounds)
        return int((high - low) * 10**scale) + 1


Facts = Mapping[str, ColumnFacts]


def numeric_cast(node: exp.Expr, facts: Facts | None = None) -> bool:
    """``CAST(x AS HUGEINT | DOUBLE | DECIMAL(38, s))`` of a number: keeps x's value and cannot fail on it.

    A narrower cast fails on values outside its range, and that failure is a signal about the rows
    (``CAST(x - 5000000 AS UTINYINT)`` fails unless x is in 5000000..5000255); a cast of a BOOLEAN or VARCHAR
    turns a condition or a text into a number. TRY_CAST is no such cast either: it makes out-of-range values
    NULL, which filters on them. With the table's columns known (``facts``), every column cast must be a number.
    """
    to = node.args.get("to")
    if type(node) is not exp.Cast or not isinstance(to, exp.DataType) or to.this not in _NUMERIC_TYPES:
        return False
    if to.this == exp.DataType.Type.DECIMAL:
        precision = to.expressions[0] if to.expressions else None
        if not (isinstance(precision, exp.DataTypeParam) and precision.name == "38"):
            return False
    elif to.this not in _WIDE_TYPES:
        return False
    if facts is not None:
        for col in node.this.find_all(exp.Column):
            column = facts.get(col.name)
            if column is None or not column.type.startswith(_NUMERIC_COLUMN):
                return False
    return True


@dataclass(frozen=True)
class ProductProblem:
    """Why a product of two row values is no value k can count: the column it is about, never a value."""

    reason: str  # computes | itself | category | unbounded | two-valued
    column: str
    construct: str = ""  # for "computes": what the factor computes (a comparison, a CASE, SIGN, ...)
    squared: bool = False  # the product is the square a variance sums of its argument (square_problem)

    def subject(self, func: str) -> str:
        """What the product is, for the aggregate ``func`` (upper case) whose argument it is about."""
        return f"the square of {func}'s argument is" if self.squared else f"the argument of {func} is"

    def what(self) -> str:
        """What the product does, after "a product that" (names columns and constructs only)."""
        return {
            "computes": f"multiplies by a factor that computes {self.construct} over column {self.column}",
            "itself": f"multiplies column {self.column} by itself",
            "category": f"multiplies by column {self.column}, which has a group-by domain",
            "unbounded": f"multiplies by column {self.column}, which declares no bounds",
            "two-valued": f"multiplies by column {self.column}, whose declared bounds allow only two values",
        }[self.reason]

    def why(self, k: int) -> str:
        """Why that would count rows the minimum group size ``k`` does not see."""
        unseen = f"the minimum group size ({k}) does not see"
        return {
            "computes": f"a product multiplies plain values only: a condition as a factor makes the sum a "
            f"filtered sum over rows {unseen}",
            "itself": f"powers of a column sum its rows apart by value, over rows {unseen}",
            "category": f"weighing rows by a category's codes sums each category apart, over rows {unseen}",
            "unbounded": "only columns the catalog declares as measured quantities (bounds of more than two "
            f"values) may be multiplied: a column of 0 and 1 as a factor makes the sum a filtered sum over rows "
            f"{unseen}",
            "two-valued": f"a factor of two values is a condition, and the product a filtered sum over rows {unseen}",
        }[self.reason]

    def hint(self, func: str = "") -> str:
        """How to ask instead (``func``: the aggregate, named where the product is its argument's square)."""
        c = self.column
        squared = (
            f"{func or 'a variance'} sums its argument's square, which multiplies every two of its columns: ask the "
            "variance of one column, or of a sum of measured quantities; "
            if self.squared
            else ""
        )
        how = {
            "computes": "multiply plain values only (columns and numbers with + - * and casts to a wide number) and "
            f"put the condition on {c} in a filter: SUM(a * b) FILTER (WHERE condition)",
            "itself": f"ask VAR_POP({c}) or STDDEV_POP({c}) for its square; a column may stand in one factor of a "
            "product only",
            "category": f"group by {c} or filter on it, SUM(x) FILTER (WHERE {c} = ...), where the minimum group "
            "size applies",
            "unbounded": f"if {c} is a measured quantity, declare its bounds: [low, high] in the catalog every party "
            f"holds; if it is a flag or a code, filter on it: SUM(x) FILTER (WHERE {c} = ...)",
            "two-valued": f"filter on it instead, SUM(x) FILTER (WHERE {c} = ...), so the minimum group size applies "
            "to the rows it covers",
        }[self.reason]
        return squared + how


def _depends_on_rows(node: exp.Expr) -> bool:
    return next(node.find_all(exp.Column), None) is not None


def product_problem(node: exp.Expr, facts: Facts | None, *, itself: bool = True) -> ProductProblem | None:
    """Why ``node``, a product of two row values, is not a value k can count (see the module); None when it is
    one, or is no such product (a constant factor, or not a product at all). Fail closed: with no ``facts`` no
    column counts as a measured quantity. ``itself=False`` lets a column stand in both factors (a square's)."""
    if not isinstance(node, exp.Mul) or not all(_depends_on_rows(f) for f in (node.this, node.expression)):
        return None
    for factor in (node.this, node.expression):
        offender = _not_plain(factor, facts)
        if offender is not None:
            column = next(offender.find_all(exp.Column), None) or next(factor.find_all(exp.Column))
            return ProductProblem("computes", column.name, _construct(offender, facts))
    left = {c.name for c in node.this.find_all(exp.Column)} if itself else set()
    for col in node.expression.find_all(exp.Column):
        if col.name in left:
            return ProductProblem("itself", col.name)
    for name in dict.fromkeys(c.name for c in node.find_all(exp.Column)):
        column = facts.get(name) if facts is not None else None
        if column is not None and column.domain:
            return ProductProblem("category", name)
        values = column.values() if column is not None else None
        if values is None:
            return ProductProblem("unbounded", name)
        if values <= 2:
            return ProductProblem("two-valued", name)
    return None


def square_problem(node: exp.Expr, facts: Facts | None) -> ProductProblem | None:
    """Why the square of ``node``, a variance's k-countable argument, is no value k can count (see the module);
    None when it is one: an argument of one column, or a sum of plain values of measured quantities.

    A CASE or IF without ELSE (a FILTER clause, as the planner writes it) makes the whole argument NULL on the
    rows it leaves out, so the square is judged on its value.

    >>> import sqlglot
    >>> facts = {"price": ColumnFacts("DECIMAL(8,2)", (0, 100000)), "tax": ColumnFacts("DECIMAL(3,2)", (0, 0.1)),
    ...          "late": ColumnFacts("TINYINT", (0, 1))}
    >>> def judge(sql):
    ...     problem = square_problem(sqlglot.parse_one(sql, read="duckdb"), facts)
    ...     return problem.what() if problem else "a value"
    >>> judge("price * 2 - 1"), judge("price + tax"), judge("CASE WHEN late = 1 THEN price - tax END")
    ('a value', 'a value', 'a value')
    >>> judge("price + late"), judge("price * tax")
    ('multiplies by column late, whose declared bounds allow only two values', 'multiplies column price by itself')
    """
    value = _covered_value(node)
    if len({c.name for c in value.find_all(exp.Column)}) <= 1:
        return None
    for product in value.find_all(exp.Mul):
        if all(_depends_on_rows(f) for f in (product.this, product.expression)):
            column = next(product.find_all(exp.Column))
            return ProductProblem("itself", column.name, squared=True)
    problem = product_problem(exp.Mul(this=value, expression=value.copy()), facts, itself=False)
    if problem is None:
        return None
    return ProductProblem(problem.reason, problem.column, problem.construct, squared=True)


def _covered_value(node: exp.Expr) -> exp.Expr:
    """``node`` on the rows it covers: each CASE or IF without ELSE replaced by its (first) value. Fail closed: one
    with no value stays, and is then no plain value."""
    value = node.copy()
    while (choice := next(value.find_all(exp.Case, exp.If), None)) is not None:
        branch = next(iter(choice.args.get("ifs") or []), None) if isinstance(choice, exp.Case) else choice
        then = branch.args.get("true") if isinstance(branch, exp.If) else None
        if then is None:
            break
        if choice is value:
            value = then.copy()
        else:
            choice.replace(then.copy())
    return value


def _not_plain(node: exp.Expr, facts: Facts | None) -> exp.Expr | None:
    """The first node of a factor that is not a plain value (see the module); None if it is one."""
    if isinstance(node, exp.Column):
        return None
    if isinstance(node, exp.Literal):
        return node if node.is_string else None
    if isinstance(node, exp.Paren | exp.Neg):
        return _not_plain(node.this, facts)
    if isinstance(node, exp.Add | exp.Sub | exp.Mul):
        return _not_plain(node.this, facts) or _not_plain(node.expression, facts)
    if type(node) is exp.Cast:  # the cast names a condition it turns into a number; else what is inside does
        if isinstance(node.this.unnest(), exp.Predicate | exp.Not | exp.And | exp.Or):
            return node
        return _not_plain(node.this, facts) or (None if numeric_cast(node, facts) else node)
    return node


_CONDITIONS: tuple[tuple[type[exp.Expr], str], ...] = (
    (exp.Between, "BETWEEN"),
    (exp.In, "IN"),
    (exp.Like, "LIKE"),
    (exp.ILike, "ILIKE"),
    (exp.Is, "IS"),
    (exp.Predicate, "a comparison"),
    (exp.Not, "NOT"),
    (exp.And, "AND"),
    (exp.Or, "OR"),
)


def _construct(node: exp.Expr, facts: Facts | None) -> str:
    """What a factor computes, named by its construct alone (never by a value of the query)."""
    if isinstance(node, exp.Cast | exp.TryCast):
        kind = "TRY_CAST" if isinstance(node, exp.TryCast) else "CAST"
        inner = node.this.unnest()
        while isinstance(inner, exp.Cast) and not isinstance(inner, exp.TryCast):  # the planner widens casts too
            inner = inner.this.unnest()
        if isinstance(inner, exp.Predicate | exp.Not | exp.And | exp.Or):
            return f"a condition turned into a number by {kind}"
        column = facts.get(inner.name) if facts is not None and isinstance(inner, exp.Column) else None
        if column is not None and not column.type.startswith(_NUMERIC_COLUMN):
            return f"a {column.type} turned into a number by {kind}"
        return f"a {kind} to {node.to.sql('duckdb')}"
    if isinstance(node, exp.Case | exp.If):
        return "a CASE"
    for condition, name in _CONDITIONS:
        if isinstance(node, condition):
            return name
    if isinstance(node, exp.Div | exp.Mod | exp.IntDiv):
        return {exp.Div: "a division", exp.Mod: "%", exp.IntDiv: "//"}[type(node)]
    if isinstance(node, exp.Func):
        return node.sql_name()
    if isinstance(node, exp.Null | exp.Boolean | exp.Literal):
        return "a constant that is no number"
    return node.key.upper()
