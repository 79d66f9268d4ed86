"""Where each column is used, read from the plan every node derives itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.catalog import Catalog, load_catalog
from federation.planner import plan_query
from policies.engine import column_uses

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
        # group keys: group, and output when returned
        ("SELECT city_code, COUNT(*) FROM deposits GROUP BY city_code", {"city_code": ["group", "output"]}),
        ("SELECT COUNT(*) FROM deposits GROUP BY city_code", {"city_code": ["group"]}),
        (
            "SELECT EXTRACT(YEAR FROM month) AS y, COUNT(*) FROM deposits GROUP BY y",
            {"month": ["group", "output"]},
        ),
        # a CASE key: its columns are grouped (and output), not filtered
        (
            "SELECT CASE WHEN amount_fen > 100000 THEN 'high' ELSE 'low' END AS band, COUNT(*) FROM deposits "
            "GROUP BY band",
            {"amount_fen": ["group", "output"]},
        ),
        (
            "SELECT COUNT(*) FROM deposits GROUP BY CASE WHEN amount_fen > 100000 THEN 'high' ELSE 'low' END",
            {"amount_fen": ["group"]},
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
            {"gender": ["group"], "rate": ["aggregate"]},
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
    assert uses(sql) == {"amount_fen": ["aggregate", "filter", "group"], "gender": ["group", "output"]}
