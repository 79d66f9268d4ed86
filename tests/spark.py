"""Spark for tests: one local session for the whole run, configured as a Spark region's backend configures it.

- ``spark_session`` (a session fixture; tests/conftest.py makes it visible to every test) starts Spark once
  (``local[2]``, no UI, two shuffle partitions, a modest driver, quiet logs) with the settings the Spark
  rendering assumes (:data:`federation.planner.spark_dialect.SPARK_SESSION_CONF`), and stops it at the end.
  Starting the JVM takes most of the time a Spark test costs, so no test starts a session of its own.
- :func:`spark_schema` is a table's explicit Spark schema from its catalog types, so rows load as the catalog
  declares them (never by Spark's inference); :func:`spark_rows` reads an answer as DuckDB gives it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from hpf.federation.planner.spark_dialect import SPARK_SESSION_CONF
from hpf.federation.planner.spark_types import spark_value


def _session() -> Any:
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master("local[2]")
        .appName("hpf-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.adaptive.enabled", "false")  # no re-planning: a few rows, many small queries
        .config("spark.sql.codegen.wholeStage", "false")  # compiling each query costs more than running it
        .config("spark.driver.memory", "768m")
        .config("spark.driver.extraJavaOptions", "-XX:+UseSerialGC")
    )
    for key, value in SPARK_SESSION_CONF.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)  # PySpark logs every failed query
    return session


@pytest.fixture(scope="session")
def spark_session() -> Iterator[Any]:
    """One local Spark session for the run, stopped at its end."""
    session = _session()
    try:
        yield session
    finally:
        session.stop()


_DECIMAL = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")


def spark_schema(columns: Mapping[str, str]) -> Any:
    """The Spark schema of a table of ``columns`` (name -> catalog type)."""
    from pyspark.sql import types as T

    simple = {
        "VARCHAR": T.StringType(),
        "INTEGER": T.IntegerType(),
        "BIGINT": T.LongType(),
        "BOOLEAN": T.BooleanType(),
        "DATE": T.DateType(),
        "DOUBLE": T.DoubleType(),
    }
    fields = []
    for name, declared in columns.items():
        decimal = _DECIMAL.fullmatch(declared.upper())
        kind = T.DecimalType(int(decimal[1]), int(decimal[2])) if decimal else simple[declared.upper()]
        fields.append(T.StructField(name, kind, nullable=True))
    return T.StructType(fields)


def load_view(session: Any, name: str, columns: Mapping[str, str], rows: Sequence[Sequence[Any]]) -> None:
    """``rows`` as the temporary view ``name``, of the catalog's column types."""
    frame = session.createDataFrame([tuple(r) for r in rows], schema=spark_schema(columns))
    frame.createOrReplaceTempView(name)


def spark_rows(session: Any, sql: str) -> list[tuple[Any, ...]]:
    """The answer to ``sql`` as DuckDB gives the same values (:func:`spark_value`)."""
    return [tuple(spark_value(v) for v in row) for row in session.sql(sql).collect()]
