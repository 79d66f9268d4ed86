"""PostgreSQL for tests: a database of its own on the shared server, or a private server to break.

- :func:`fresh_database` creates a uniquely named database on the server this machine runs (127.0.0.1:5432, user
  ``postgres``, trust authentication) and drops it after. A test that needs it fails, never skips, when the
  server is not there: CI runs one.
- ``pg_database`` (a session fixture; tests/conftest.py makes it visible to every test) is one such database for
  the whole session, whose default collation is ICU's English, not code point order, so that a query that
  compares text without ``COLLATE "C"`` gives other rows than DuckDB; :func:`pg_connect` opens a connection to
  it that reads NUMERIC as DuckDB's values (:func:`federation.planner.dialects.pg_value`).
- :func:`private_postgres` starts a server of the test's own (``initdb`` in a temporary directory, ``pg_ctl`` on a
  free port, password authentication) for the fault tests, which stop it, restart it and refuse passwords; it
  is stopped and removed after. The shared server is never stopped.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.adapt import Loader

from hpf.federation.planner.dialects import pg_value

SHARED_DSN = os.environ.get("HPF_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PRIVATE_PASSWORD = "s3cret-Pa55-word"  # the private server's superuser password (the fault tests look for it in logs)


def dsn_for(dbname: str, *, host: str = "127.0.0.1", port: int = 5432, password: str | None = None) -> str:
    word = f" password={password}" if password else ""
    return f"host={host} port={port} user=postgres dbname={dbname}{word}"


ICU_ENGLISH = sql.SQL("TEMPLATE template0 ENCODING UTF8 LOCALE 'C.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE 'en'")


@contextlib.contextmanager
def fresh_database(admin_dsn: str = SHARED_DSN, *, icu_english: bool = False) -> Iterator[str]:
    """A fresh database on the server ``admin_dsn`` reaches (collating text by ICU's English rules if
    ``icu_english``); yields its DSN; dropped after."""
    name = f"hpf_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as admin:
        create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        admin.execute(sql.SQL(" ").join([create, ICU_ENGLISH]) if icu_english else create)
    params = psycopg.conninfo.conninfo_to_dict(admin_dsn)
    params["dbname"] = name
    try:
        yield psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})
    finally:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """The DSN of a fresh database for the session, collating text by ICU's English rules; dropped at the end."""
    with fresh_database(icu_english=True) as dsn:
        yield dsn


class NumericAsDuckDB(Loader):
    def load(self, data: bytes | bytearray | memoryview) -> object:
        return pg_value(bytes(data).decode())


def pg_connect(dsn: str) -> psycopg.Connection:
    """A connection (autocommit) that reads NUMERIC as DuckDB gives the same values."""
    con = psycopg.connect(dsn, autocommit=True)
    con.adapters.register_loader("numeric", NumericAsDuckDB)
    return con


def load_table(dsn: str, name: str, columns: dict[str, str], rows: Sequence[Sequence[Any]]) -> None:
    """Create table ``name`` (PostgreSQL column types) in the database ``dsn`` and copy ``rows`` into it."""
    cols = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in columns.items())
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(name), cols))
        with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(name))) as copy:
            for row in rows:
                copy.write_row(row)


def _bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}")) or [shutil.which(tool) or ""]
    if not found[-1]:
        raise RuntimeError(f"PostgreSQL's {tool} is not installed")
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivatePostgres:
    """A PostgreSQL server of one test's own: password authentication on 127.0.0.1:``port``."""

    data: Path
    port: int
    run_as: list[str]  # a prefix that runs a command as the server's owner (initdb refuses to run as root)

    def dsn(self, dbname: str = "postgres", password: str = PRIVATE_PASSWORD) -> str:
        return dsn_for(dbname, port=self.port, password=password)

    def _ctl(self, *args: str) -> None:
        cmd = [*self.run_as, _bin("pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args]
        subprocess.run(cmd, check=True, capture_output=True)

    def start(self) -> None:
        opts = f"-c port={self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.data}"
        self._ctl("-o", opts, "-l", str(self.data / "server.log"), "start")

    def stop(self) -> None:
        self._ctl("-m", "immediate", "stop")


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """initdb in a temporary directory, started on a free port; stopped and removed after."""
    root = Path(tempfile.mkdtemp(prefix="hpf-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # the server must not run as root: as the postgres account
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    os.chmod(root, 0o755)
    data = root / "data"
    pwfile = root / "pw"
    pwfile.write_text(PRIVATE_PASSWORD + "\n")
    if run_as:
        shutil.chown(pwfile, "postgres")
    initdb = [_bin("initdb"), "-D", str(data), "-U", "postgres", "-A", "scram-sha-256", f"--pwfile={pwfile}"]
    subprocess.run([*run_as, *initdb], check=True, capture_output=True)
    server = PrivatePostgres(data, _free_port(), run_as)
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
