"""Where each column is used, read from the plan every node derives itself.

Fail closed: inside an aggregate's argument a column is an ``aggregate`` use only through + - *, unary minus,
parentheses, a CAST to a number or a CASE/IF's value; in a CASE/IF condition a ``filter`` use; under anything
else both. A group key's columns are always ``group`` and ``output`` uses (the asker decrypts every cell of the
public layout), and ``filter`` ones too under a CASE condition or anything but the whitelist and a date part.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hpf.federation.catalog import Catalog, load_catalog
from hpf.federation.errors import PlanError
from hpf.federation.planner import plan_query
from hpf.policies.uses import column_uses

MINI = load_catalog(Path(__file__).resolve().parents[1] / "fixtures" / "mini_catalog.yaml")


def uses(sql: str, catalog: Catalog = MINI) -> dict[str, list[str]]:
    return {column: sorted(u) for column, u in sorted(column_uses(plan_query(sql, catalog)).items())}


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT COUNT(*) FROM deposits", {}),
        ("SELECT COUNT(*) FROM deposits WHERE person_id = 'p1'", {"person_id": ["filter"]}),
        (
            "SELECT SUM(amount_fen) FROM deposits WHERE gender = 'F'",
            {"amount_fen": ["aggregate"], "gender": ["filter"]},
        ),
        # an aggregate's FILTER clause is a filter; its argument an aggregate use
        (
            "SELECT SUM(amount_fen) FILTER (WHERE gender = 'F' AND rate > 0) FROM deposits",
            {"amount_fen": ["aggregate"], "gender": ["filter"], "rate": ["filter"]},
        ),
        ("SELECT COUNT(*) FILTER (WHERE amount_fen > 0) FROM deposits", {"amount_fen": ["filter"]}),
        # a CASE written by hand inside an aggregate: conditions filter, returned values are aggregated
        (
            "SELECT SUM(CASE WHEN gender = 'F' THEN amount_fen ELSE rate END) FROM deposits",
            {"amount_fen": ["aggregate"], "gender": ["filter"], "rate": ["aggregate"]},
        ),
        ("SELECT SUM(CASE gender WHEN 'F' THEN 1 ELSE 0 END) FROM deposits", {"gender": ["filter"]}),
        # group keys: group and output, returned or not (every group's cell reaches the asker)
        ("SELECT city_code, COUNT(*) FROM deposits GROUP BY city_code", {"city_code": ["group", "output"]}),
        ("SELECT COUNT(*) FROM deposits GROUP BY city_code", {"city_code": ["group", "output"]}),
        (
            "SELECT EXTRACT(YEAR FROM month) AS y, COUNT(*) FROM deposits GROUP BY y",
            {"month": ["group", "output"]},
        ),
        # a CASE key compares its columns: filter, group and output
        (
            "SELECT CASE WHEN amount_fen > 100000 THEN 'high' ELSE 'low' END AS band, COUNT(*) FROM deposits "
            "GROUP BY band",
            {"amount_fen": ["filter", "group", "output"]},
        ),
        (
            "SELECT COUNT(*) FROM deposits GROUP BY CASE WHEN amount_fen > 100000 THEN 'high' ELSE 'low' END",
            {"amount_fen": ["filter", "group", "output"]},
        ),
        # a key named only in HAVING or ORDER BY still ties rows to its values: output
        ("SELECT COUNT(*) FROM deposits GROUP BY gender HAVING gender = 'F'", {"gender": ["group", "output"]}),
        ("SELECT COUNT(*) FROM deposits GROUP BY gender ORDER BY gender", {"gender": ["group", "output"]}),
        ("SELECT city_code || '!', COUNT(*) FROM deposits GROUP BY city_code", {"city_code": ["group", "output"]}),
        # an aggregate only in HAVING still reads its argument
        (
            "SELECT city_code FROM deposits GROUP BY city_code HAVING SUM(amount_fen) > 0",
            {"amount_fen": ["aggregate"], "city_code": ["group", "output"]},
        ),
        (
            "SELECT COUNT(*) FROM deposits GROUP BY gender HAVING AVG(rate) > 0 ORDER BY COUNT(*)",
            {"gender": ["group", "output"], "rate": ["aggregate"]},
        ),
    ],
)
def test_column_uses(sql: str, expected: dict[str, list[str]]) -> None:
    assert uses(sql) == expected


def test_one_column_in_every_place() -> None:
    sql = (
        "SELECT gender, SUM(amount_fen) FILTER (WHERE amount_fen > 0) FROM deposits WHERE amount_fen < 10 "
        "GROUP BY gender, CASE WHEN amount_fen > 5 THEN 'a' ELSE 'b' END"
    )
    assert uses(sql) == {"amount_fen": ["aggregate", "filter", "group", "output"], "gender": ["group", "output"]}


BOTH = ["aggregate", "filter"]


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        # a predicate computed as a value filters on the column it compares
        ("CAST(amount_fen > 100000000 AS INTEGER)", {"amount_fen": BOTH}),
        ("(amount_fen = 123456789)::INTEGER", {"amount_fen": BOTH}),
        ("CAST(amount_fen BETWEEN 1 AND 9 AS INTEGER)", {"amount_fen": BOTH}),
        ("CAST(gender IN ('F') AS INTEGER)", {"gender": BOTH}),
        ("CAST(gender LIKE 'F%' AS INTEGER)", {"gender": BOTH}),
        ("CAST(gender IS NULL AS INTEGER)", {"gender": BOTH}),
        ("CAST(NOT (amount_fen > 0) AS INTEGER)", {"amount_fen": BOTH}),
        ("CAST(amount_fen > 0 AND rate > 0 AS INTEGER)", {"amount_fen": BOTH, "rate": BOTH}),
        # functions that compare, clamp or drop values
        ("NULLIF(amount_fen, 123456789)", {"amount_fen": BOTH}),
        ("SIGN(amount_fen - 123456789)", {"amount_fen": BOTH}),
        ("GREATEST(amount_fen, 123456789)", {"amount_fen": BOTH}),
        ("LEAST(amount_fen, 123456789)", {"amount_fen": BOTH}),
        ("ABS(amount_fen - 123456789)", {"amount_fen": BOTH}),
        ("COALESCE(amount_fen, 0)", {"amount_fen": BOTH}),
        ("amount_fen % 2", {"amount_fen": BOTH}),
        ("LENGTH(gender)", {"gender": BOTH}),
        ("CAST(amount_fen AS VARCHAR)", {"amount_fen": BOTH}),
        # TRY_CAST makes out-of-range values NULL: COUNT(TRY_CAST(x - v AS UTINYINT)) counts x in v..v+255
        ("TRY_CAST(amount_fen AS DECIMAL(20, 2))", {"amount_fen": BOTH}),
        ("TRY_CAST(amount_fen - 1000 AS SMALLINT)", {"amount_fen": BOTH}),
        ("CAST(amount_fen AS BOOLEAN)", {"amount_fen": BOTH}),
        # a product of two row values is a value only of measured quantities (declared bounds; see
        # test_policy_products.py): without the catalog's columns, none is; a huge literal factor or term neither
        ("amount_fen * rate", {"amount_fen": BOTH, "rate": BOTH}),
        ("amount_fen * amount_fen", {"amount_fen": BOTH}),
        ("amount_fen * 10000000000000", {"amount_fen": BOTH}),
        ("amount_fen + 9000000000000000000", {"amount_fen": BOTH}),
        # the value whitelist: + - * that cannot overflow on one row, unary minus, parentheses, a CAST to
        # HUGEINT, DOUBLE or DECIMAL(38, s), a CASE's values
        ("amount_fen", {"amount_fen": ["aggregate"]}),
        ("(amount_fen - 5) * 2 + -rate", {"amount_fen": ["aggregate"], "rate": ["aggregate"]}),
        ("CAST(amount_fen AS DECIMAL(38, 2))", {"amount_fen": ["aggregate"]}),
        ("amount_fen::HUGEINT", {"amount_fen": ["aggregate"]}),
        ("CAST(amount_fen AS DOUBLE) * 1000", {"amount_fen": ["aggregate"]}),
        ("CASE WHEN gender = 'F' THEN amount_fen END", {"amount_fen": ["aggregate"], "gender": ["filter"]}),
        ("IF(gender = 'F', amount_fen, NULL)", {"amount_fen": ["aggregate"], "gender": ["filter"]}),
        # a condition inside a condition is still a filter; a value inside a condition is filtered on
        (
            "CASE WHEN (CASE WHEN rate > 0 THEN amount_fen END) > 5 THEN 1 END",
            {"amount_fen": ["filter"], "rate": ["filter"]},
        ),
        # a CASE's value under a function: the function computes on it
        ("CASE WHEN gender = 'F' THEN ABS(amount_fen) END", {"amount_fen": BOTH, "gender": ["filter"]}),
        ("ABS(CASE WHEN gender = 'F' THEN amount_fen END)", {"amount_fen": BOTH, "gender": BOTH}),
    ],
)
def test_an_aggregate_argument_is_a_value_only_through_the_whitelist(arg: str, expected: dict[str, list[str]]) -> None:
    assert uses(f"SELECT COUNT({arg}) FROM deposits") == expected


def test_a_cast_of_a_boolean_or_text_to_a_number_computes_on_it() -> None:
    """With the table's types known, TRY_CAST(flag AS INTEGER) turns a condition into a count of true rows."""
    sql = "SELECT SUM(TRY_CAST(gender AS INTEGER)), SUM(CAST(amount_fen AS HUGEINT)) FROM deposits"
    plan = plan_query(sql, MINI)
    types = {name: column.type for name, column in MINI.tables["deposits"].columns.items()}
    found = {c: sorted(u) for c, u in column_uses(plan, types).items()}
    assert found == {"gender": BOTH, "amount_fen": ["aggregate"]}


@pytest.mark.parametrize(
    "arg",
    [
        "CAST(amount_fen AS DECIMAL(20, 2))",  # a narrowing: fails on large values
        "CAST(amount_fen - 4999000 AS UTINYINT)",  # fails outside 4999000..4999255
        "CAST(amount_fen AS INTEGER)",
        "CAST(gender AS HUGEINT)",  # text into a number: fails on text that is no number
        "CAST(score AS BIGINT)",  # DOUBLE into an integer: fails on NaN, infinity, huge values
    ],
)
def test_what_could_fail_on_a_value_never_reaches_a_policy(arg: str) -> None:
    """Casts that fail on particular values were a signal about those values; the planner now refuses them."""
    with pytest.raises(PlanError) as info:
        plan_query(f"SELECT COUNT({arg}) FROM deposits", MINI)
    assert info.value.code in ("PLAN_CAST_NOT_TOTAL", "PLAN_EXPRESSION_NOT_ALLOWED")


def test_sum_of_a_comparison_is_a_filter() -> None:
    assert uses("SELECT SUM(CAST(amount_fen > 100000000 AS INTEGER)) FROM deposits") == {"amount_fen": BOTH}
    assert uses("SELECT SUM((amount_fen = 123456789)::INTEGER) FROM deposits") == {"amount_fen": BOTH}
    assert uses("SELECT AVG(GREATEST(amount_fen, 5)) FROM deposits") == {"amount_fen": BOTH}


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("city_code", {"city_code": ["group", "output"]}),
        ("(city_code)", {"city_code": ["group", "output"]}),
        # date parts of a declared date: the planner's domains
        ("EXTRACT(QUARTER FROM month)", {"month": ["group", "output"]}),
        ("YEAR(month)", {"month": ["group", "output"]}),
        ("MONTH(month)", {"month": ["group", "output"]}),
        ("date_part('month', month)", {"month": ["group", "output"]}),
        # a CASE key compares the column it tests
        ("CASE WHEN gender = 'F' THEN 'f' ELSE 'other' END", {"gender": ["filter", "group", "output"]}),
        ("CASE city_code WHEN '310000' THEN 'sh' ELSE 'elsewhere' END", {"city_code": ["filter", "group", "output"]}),
        (
            "CASE WHEN EXTRACT(YEAR FROM month) > 2020 THEN 1 ELSE 0 END",
            {"month": ["filter", "group", "output"]},
        ),
    ],
)
def test_group_key_columns_are_group_and_output_and_filter_when_compared(
    key: str, expected: dict[str, list[str]]
) -> None:
    assert uses(f"SELECT COUNT(*) FROM deposits GROUP BY {key}") == expected
