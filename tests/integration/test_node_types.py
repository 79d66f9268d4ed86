"""A node serves a file only if every column converts to its catalog type without loss.

The oracle here reads the raw files with the types they carry (plain DuckDB, no cast to the catalog's types),
never the way the node reads them: a node that cast a DECIMAL(15,2) discount to INTEGER would agree with an
oracle that cast it too, and both would be wrong.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from examples import budget
from harness import raw_file_oracle, write_table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpf.federation.catalog import Catalog
from hpf.federation.errors import DataError, UnavailableError
from hpf.node.backends.duckdb_backend import DuckDBBackend
from hpf.node.backends.type_check import lossless
from hpf.node.config import TableSource


def catalog(columns: dict[str, str]) -> Catalog:
    return Catalog.model_validate(
        {
            "federation": "t",
            "nodes": [{"id": "north", "address": "127.0.0.1:1"}],
            "tables": {"lineitem": {"columns": {c: {"type": t} for c, t in columns.items()}}},
        }
    )


def backend(path: Path, columns: dict[str, str]) -> DuckDBBackend:
    return DuckDBBackend(catalog(columns), {"lineitem": TableSource(path=path)})


def raw(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """The oracle: DuckDB over the file as it is, with its own column types."""
    return raw_file_oracle(path, sql)


def refused(path: Path, columns: dict[str, str]) -> DataError:
    with pytest.raises(DataError) as info:
        backend(path, columns)
    return info.value


def discounts(path: Path) -> None:
    """A lineitem file whose l_discount is DECIMAL(15,2), 0.00 to 0.10 as in TPC-H."""
    rows = [(i, Decimal(i % 11) / 100) for i in range(5_000)]
    write_table(path, {"l_orderkey": "BIGINT", "l_discount": "DECIMAL(15,2)"}, rows)


def test_a_decimal_column_declared_integer_is_refused_at_start(tmp_path: Path) -> None:
    path = tmp_path / "lineitem.parquet"
    discounts(path)
    assert raw(path, "SELECT SUM(l_discount), COUNT(*) FILTER (WHERE l_discount > 0.05) FROM lineitem") == [
        (Decimal("249.85"), 2270)
    ]
    err = refused(path, {"l_orderkey": "BIGINT", "l_discount": "INTEGER"})
    assert err.code == "DATA_TYPE_MISMATCH"
    for named in ("'lineitem'", "'l_discount'", "DECIMAL(15,2)", "INTEGER"):
        assert named in err.message
    assert "0.05" not in err.message and "0.1" not in err.message and "l_orderkey" not in err.message


def test_a_nested_file_type_is_refused_unread_and_its_field_names_never_reach_sql_or_a_message(tmp_path: Path) -> None:
    """A STRUCT's type spells its field names, text the file chose: a name crafted to close the cast and run a
    statement must be neither run nor quoted."""
    path, written = tmp_path / "lineitem.parquet", tmp_path / "written.csv"
    field = f"x INTEGER)) IS NULL) FROM range(1); COPY (SELECT 1) TO '{written}'; SELECT ((1"
    con = duckdb.connect(":memory:")
    con.execute(
        f"COPY (SELECT 1::BIGINT AS l_orderkey, {{'{field.replace(chr(39), chr(39) * 2)}': 1}} AS l_discount) "
        f"TO '{path}' (FORMAT parquet)"
    )
    con.close()
    err = refused(path, {"l_orderkey": "BIGINT", "l_discount": "INTEGER"})
    assert err.code == "DATA_TYPE_MISMATCH" and "'l_discount' is STRUCT in the file" in err.message, err.message
    assert not written.exists() and "COPY" not in err.message and "x INTEGER" not in err.message


def test_a_decimal_scale_the_catalog_cuts_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lineitem.parquet"
    discounts(path)
    err = refused(path, {"l_orderkey": "BIGINT", "l_discount": "DECIMAL(15,1)"})
    assert err.code == "DATA_TYPE_MISMATCH" and "DECIMAL(15,1)" in err.message and "0.05" not in err.message


def test_a_widening_starts_and_answers_as_the_raw_file(tmp_path: Path) -> None:
    path = tmp_path / "lineitem.parquet"
    write_table(path, {"qty": "INTEGER", "price": "DECIMAL(9,2)"}, [(2**31 - 1, "1234567.89"), (-5, "0.01")])
    node = backend(path, {"qty": "BIGINT", "price": "DECIMAL(18,2)"})
    sql = "SELECT SUM(qty), SUM(price), COUNT(*) FILTER (WHERE price > 0.005) FROM lineitem"
    assert node.run(sql) == raw(path, sql) == [(2**31 - 6, Decimal("1234567.90"), 2)]


def test_a_narrowing_whose_values_all_fit_starts_and_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "lineitem.parquet"
    write_table(path, {"qty": "BIGINT", "price": "DECIMAL(15,2)"}, [(2**31 - 1, "12.00"), (-(2**31), "-3.00")])
    node = backend(path, {"qty": "INTEGER", "price": "INTEGER"})
    sql = "SELECT SUM(qty), SUM(price), COUNT(*) FILTER (WHERE qty > 0) FROM lineitem"
    assert node.run(sql) == raw(path, sql) == [(-1, 9, 1)]


def test_a_narrowing_with_one_value_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lineitem.parquet"
    write_table(path, {"qty": "BIGINT"}, [(i,) for i in range(999)] + [(2**31,)])
    err = refused(path, {"qty": "INTEGER"})
    assert err.code == "DATA_TYPE_MISMATCH" and "'qty'" in err.message and "BIGINT" in err.message
    assert str(2**31) not in err.message


def test_csv_columns_are_checked_as_the_node_reads_them(tmp_path: Path) -> None:
    fits = tmp_path / "fits.csv"
    fits.write_text("qty,rate\n7,0.0325\n8,0.0410\n")
    node = backend(fits, {"qty": "DECIMAL(6,2)", "rate": "DECIMAL(6,4)"})
    sql = "SELECT SUM(qty), SUM(rate) FROM lineitem"
    assert node.run(sql) == [(Decimal("15.00"), Decimal("0.0735"))]
    # the oracle: the file's text, as decimals (DuckDB over the raw CSV reads it as DOUBLE and sums inexactly)
    lines = [line.split(",") for line in fits.read_text().splitlines()[1:]]
    assert node.run(sql) == [(sum(Decimal(q) for q, _ in lines), sum(Decimal(r) for _, r in lines))]
    cut = tmp_path / "cut.csv"
    cut.write_text("qty,rate\n7,0.0325\n8,0.04105\n")
    err = refused(cut, {"qty": "BIGINT", "rate": "DECIMAL(6,4)"})
    assert err.code == "DATA_TYPE_MISMATCH" and "'rate'" in err.message and "0.04105" not in err.message
    text = tmp_path / "text.csv"
    text.write_text("qty,rate\n1.5,0.1\n2,0.2\n")
    assert refused(text, {"qty": "INTEGER", "rate": "DOUBLE"}).code == "DATA_TYPE_MISMATCH"


def test_a_file_changed_under_the_running_node_to_a_type_that_does_not_fit_makes_it_unwell(tmp_path: Path) -> None:
    """As for a file that can no longer be read: the region is unwell (reported missing) until it fits again."""
    path = tmp_path / "lineitem.parquet"
    write_table(path, {"l_orderkey": "BIGINT", "l_discount": "INTEGER"}, [(1, 3), (2, 4)])
    node = backend(path, {"l_orderkey": "BIGINT", "l_discount": "INTEGER"})
    sql = "SELECT SUM(l_discount) FROM lineitem"
    assert node.run(sql) == [(7,)]

    def replace(rows: Sequence[tuple[Any, ...]], discount_type: str) -> None:
        fresh = tmp_path / "fresh.parquet"
        write_table(fresh, {"l_orderkey": "BIGINT", "l_discount": discount_type}, rows)
        os.replace(fresh, path)

    replace([(1, "0.05"), (2, "0.07"), (3, "0.00")], "DECIMAL(15,2)")
    with pytest.raises(UnavailableError) as info:
        node.run(sql)
    assert info.value.code == "NODE_UNWELL" and "0.05" not in info.value.message
    with pytest.raises(UnavailableError):  # and stays so while the file is unchanged
        node.columns(sql)
    replace([(1, "5.00"), (2, "6.00"), (3, "0.00")], "DECIMAL(15,2)")  # values an INTEGER holds: served again
    assert node.run(sql) == raw(path, "SELECT CAST(SUM(l_discount) AS HUGEINT) FROM lineitem") == [(11,)]


def test_a_file_changed_to_one_without_a_catalog_column_makes_the_node_unwell(tmp_path: Path) -> None:
    """A replacement file that lost a column the catalog declares: the region is unwell (a stable code, not a
    failure of the node), and serves again once the column is back."""
    path = tmp_path / "lineitem.parquet"
    write_table(path, {"l_orderkey": "BIGINT", "l_discount": "INTEGER"}, [(1, 3), (2, 4)])
    node = backend(path, {"l_orderkey": "BIGINT", "l_discount": "INTEGER"})
    sql = "SELECT SUM(l_discount) FROM lineitem"
    fresh = tmp_path / "fresh.parquet"
    write_table(fresh, {"l_orderkey": "BIGINT"}, [(1,), (2,)])
    os.replace(fresh, path)
    for _ in range(2):  # and stays so while the file is unchanged
        with pytest.raises(UnavailableError) as info:
            node.run(sql)
        assert info.value.code == "NODE_UNWELL"
    write_table(fresh, {"l_orderkey": "BIGINT", "l_discount": "INTEGER"}, [(1, 5), (2, 6)])
    os.replace(fresh, path)
    assert node.run(sql) == [(11,)]


# every (file type, catalog type, values) triple: the node refuses, or answers as DuckDB over the raw file
NUMERIC = ["TINYINT", "SMALLINT", "INTEGER", "BIGINT", *(f"DECIMAL({p},{s})" for p in (4, 9, 15, 18) for s in (0, 2))]
RANGE = {"TINYINT": 2**7, "SMALLINT": 2**15, "INTEGER": 2**31, "BIGINT": 2**63}


def _holds(type_: str, value: Decimal) -> bool:
    """Whether ``type_`` holds ``value`` exactly, from Python's decimals (not DuckDB's casts)."""
    if type_ in RANGE:
        return value == value.to_integral_value() and -RANGE[type_] <= value < RANGE[type_]
    p, s = (int(x) for x in type_[len("DECIMAL(") : -1].split(","))
    return value == value.quantize(Decimal(1).scaleb(-s)) and abs(value) < Decimal(10) ** (p - s)


@st.composite
def triples(draw: st.DrawFn) -> tuple[str, str, list[Decimal]]:
    file_type, catalog_type = draw(st.sampled_from(NUMERIC)), draw(st.sampled_from(NUMERIC))
    if file_type in RANGE:
        top = RANGE[file_type]
        small = st.integers(max(-top, -200), min(top - 1, 200))
        whole = st.one_of(small, st.integers(-top, top - 1), st.sampled_from([-top, top - 1]))
        values = [Decimal(v) for v in draw(st.lists(whole, min_size=1, max_size=8))]
    else:
        p, s = (int(x) for x in file_type[len("DECIMAL(") : -1].split(","))
        units = st.one_of(st.integers(-500, 500), st.integers(-(10**p) + 1, 10**p - 1))
        values = [Decimal(u).scaleb(-s) for u in draw(st.lists(units, min_size=1, max_size=8))]
    return file_type, catalog_type, values


@settings(max_examples=budget(120), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(triple=triples())
def test_the_node_refuses_or_answers_as_the_raw_file(tmp_path: Path, triple: tuple[str, str, list[Decimal]]) -> None:
    file_type, catalog_type, values = triple
    path = tmp_path / "lineitem.parquet"
    write_table(path, {"x": file_type}, [(str(v),) for v in values])
    fits = all(_holds(catalog_type, v) for v in values)
    try:
        node = backend(path, {"x": catalog_type})
    except DataError as err:
        assert err.code == "DATA_TYPE_MISMATCH" and not fits and not lossless(file_type, catalog_type)
        assert f"{file_type} in the file but {catalog_type} in the catalog" in err.message
        return
    assert fits
    sql = "SELECT SUM(x), COUNT(*) FILTER (WHERE x > 0), COUNT(*) FILTER (WHERE x < 1) FROM lineitem"
    assert node.run(sql) == raw(path, sql)
    node.close()
