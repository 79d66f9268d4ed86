"""A TPC-H-like ``lineitem`` for one region, written by DuckDB: what a newcomer federating their own files holds.

TPC-H's column names and types: DECIMAL(15,2) quantities and money (a price under 100,000, a discount of 0.00 to
0.10, a tax of 0.00 to 0.08), one-letter flags and a ship date from 1992 to 1998. Rows are a function of their
number and ``region`` (an index), so every run writes the same file.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

# each column as the file carries it (a CSV carries text: read it as this type to get the rows back)
LINEITEM_TYPES: dict[str, str] = {
    "l_orderkey": "BIGINT",
    "l_quantity": "DECIMAL(15,2)",
    "l_extendedprice": "DECIMAL(15,2)",
    "l_discount": "DECIMAL(15,2)",
    "l_tax": "DECIMAL(15,2)",
    "l_returnflag": "VARCHAR",
    "l_linestatus": "VARCHAR",
    "l_shipdate": "DATE",
    "l_comment": "VARCHAR",
}


def write_lineitem(path: Path, region: int, rows: int, regions: int = 4) -> None:
    """Write ``rows`` rows of region number ``region`` (of ``regions``: order keys do not overlap) to ``path``,
    as CSV with a header if it ends in ``.csv``, else as Parquet."""
    fmt = "csv, HEADER" if path.suffix == ".csv" else "parquet"
    duckdb.connect().execute(
        f"""COPY (SELECT (range * {regions} + {region})::BIGINT AS l_orderkey,
            (1 + hash(range, {region}) % 50)::DECIMAL(15,2) AS l_quantity,
            ((hash(range, {region}, 7) % 10000000) / 100)::DECIMAL(15,2) AS l_extendedprice,
            ((hash(range, {region}, 3) % 11) / 100)::DECIMAL(15,2) AS l_discount,
            ((hash(range, {region}, 5) % 9) / 100)::DECIMAL(15,2) AS l_tax,
            ['A', 'N', 'R'][1 + (hash(range, {region}, 1) % 3)::BIGINT] AS l_returnflag,
            ['F', 'O'][1 + (hash(range, {region}, 2) % 2)::BIGINT] AS l_linestatus,
            DATE '1992-01-01' + (hash(range, {region}, 4) % 2500)::INTEGER AS l_shipdate,
            'note ' || range AS l_comment
        FROM range({rows})) TO '{path}' (FORMAT {fmt})"""
    )
