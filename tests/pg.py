"""A PostgreSQL database of its own for a test session, on the machine's server (127.0.0.1:5432, user postgres).

``pg_database`` (a session fixture; tests/conftest.py makes it visible to every test) creates a uniquely named
database and drops it at the end. Its default collation is ICU's English, not code point order, so that a query
that compares text without ``COLLATE "C"`` gives other rows than DuckDB. It fails, never skips, when the server
is missing: CI runs one.
``pg_connect`` opens a connection to it that reads NUMERIC as DuckDB's values (see
:func:`federation.planner.dialects.pg_value`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.adapt import Loader

from hpf.federation.planner.dialects import pg_value

SERVER = os.environ.get("HPF_TEST_PG", "host=127.0.0.1 port=5432 user=postgres")


class NumericAsDuckDB(Loader):
    def load(self, data: bytes | bytearray | memoryview) -> object:
        return pg_value(bytes(data).decode())


def pg_connect(dsn: str) -> psycopg.Connection:
    con = psycopg.connect(dsn, autocommit=True)
    con.adapters.register_loader("numeric", NumericAsDuckDB)
    return con


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """The DSN of a fresh database, dropped when the session ends."""
    name = f"hpf_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(SERVER, autocommit=True) as admin:
        admin.execute(
            f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING UTF8 LOCALE 'C.UTF-8' "
            "LOCALE_PROVIDER icu ICU_LOCALE 'en'"
        )
    try:
        yield f"{SERVER} dbname={name}"
    finally:
        with psycopg.connect(SERVER, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
