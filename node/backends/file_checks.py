"""What a node checks of its data files before it serves them, and again whenever they change: every file a regular
file, every catalog column there and of a type that holds its values exactly (``type_check``), every value read
once through the table's view; and the version of the files that says when they changed."""

from __future__ import annotations

import contextlib
import glob
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import duckdb

from hpf.federation.catalog import Catalog, Table
from hpf.federation.engine import public_engine_message, runtime_failure
from hpf.federation.errors import DataError
from hpf.node.backends.type_check import check_types
from hpf.node.config import TableSource

# a data file's name, size, modification time, inode and change time (-1 for each when it is not there)
FileVersion = tuple[str, int, int, int, int]


def folders(sources: Mapping[str, TableSource]) -> list[Path]:
    """The folders holding a node's data files (a glob's folder is the part before its first wildcard)."""
    found = []
    for source in sources.values():
        text = str(source.path)
        cut = min((text.find(c) for c in "*?[" if c in text), default=-1)
        base = Path(text[:cut]).parent if cut >= 0 else Path(text).parent
        found.append(base)
    return found


def data_version(patterns: Sequence[str]) -> tuple[FileVersion, ...]:
    """The source files' names, sizes, modification times, inodes and change times: changes when any file is
    replaced or written, also by a rewrite that keeps its size and sets its modification time back (the
    change time cannot be set back)."""
    found = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)) or [pattern]:
            try:
                st = os.stat(path)
                found.append((path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
            except OSError:
                found.append((path, -1, -1, -1, -1))
    return tuple(found)


def irregular(pattern: str) -> bool:
    """Whether a file of the source ``pattern`` is there but is no regular file (a FIFO, a device, a directory): the
    engine would wait on it, perhaps forever, or read without end; it is refused before any read."""
    for path in glob.glob(pattern) or [pattern]:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue  # missing: the engine's own read says so
        if not stat.S_ISREG(mode):
            return True
    return False


def not_regular(name: str) -> DataError:
    return DataError(
        f"table {name!r}: one of its files is not a regular file",
        code="NODE_TABLE_UNREADABLE",
        hint="replace it by a complete, well-formed Parquet or CSV file of the catalog's columns and types",
    )


def read_through(con: duckdb.DuckDBPyConnection, name: str, columns: Iterable[str]) -> None:
    """Read every value of table ``name``'s view once (what a question may read), keeping none: an engine error
    here is the file's, whatever question comes."""
    listed = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
    con.execute(f'SELECT bit_xor(hash({listed})) FROM "{name}"').fetchall()


def open_table(con: duckdb.DuckDBPyConnection, name: str, table: Table, path: Path, reader: str) -> None:
    """Make table ``name``'s view over ``reader`` (its files at ``path``), refusing files that do not fit."""
    if irregular(str(path)):
        raise not_regular(name)
    _require_columns(con, name, table, path, reader)
    _require_types(con, name, table, path, reader)
    con.execute(table.view_sql(name, reader))
    _require_view(con, name, path)
    _require_read_through(con, name, table, path)


def _require_columns(con: duckdb.DuckDBPyConnection, name: str, table: Table, path: Path, reader: str) -> None:
    """The files must be readable and hold every column the catalog declares."""
    hint = "restore the file, or give its path in the node config's 'tables:'"
    with _refused(f"table {name!r}: cannot read {path}", "NODE_TABLE_UNREADABLE", hint):
        present = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()}
    missing = [c for c in table.columns if c not in present]
    if missing:
        raise DataError(
            f"table {name!r}: {path} lacks column(s) {', '.join(missing)} declared in the catalog",
            code="NODE_TABLE_SCHEMA",
            hint="give the file every column the catalog declares for the table",
        )


def _require_types(con: duckdb.DuckDBPyConnection, name: str, table: Table, path: Path, reader: str) -> None:
    """Every column's values must fit its catalog type (DATA_TYPE_MISMATCH: a cast would lose values)."""
    try:
        check_types(con, name, reader, table)
    except duckdb.OutOfMemoryException:
        raise DataError(
            f"table {name!r}: {path} cannot be checked within the node's memory limit",
            code="NODE_TABLE_UNREADABLE",
            hint="raise 'limits.memory' in the node configuration",
        ) from None


def _require_view(con: duckdb.DuckDBPyConnection, name: str, path: Path) -> None:
    """The view casting every column to its catalog type must bind."""
    with _refused(f"table {name!r}: {path} does not fit the catalog types", "NODE_TABLE_SCHEMA"):
        con.execute(f'SELECT * FROM "{name}" LIMIT 0').fetchall()


def _require_read_through(con: duckdb.DuckDBPyConnection, name: str, table: Table, path: Path) -> None:
    """Every value read once, as questions read it: a truncated or garbled file is refused here."""
    hint = "replace the file by a complete, well-formed one of the catalog's columns and types"
    with _refused(f"table {name!r}: {path} cannot be read through", "NODE_TABLE_UNREADABLE", hint, runtime_failure):
        read_through(con, name, table.columns)


@contextlib.contextmanager
def _refused(
    what: str, code: str, hint: str | None = None, failure: Callable[[duckdb.Error], str] = public_engine_message
) -> Iterator[None]:
    """An engine error in the block refuses the files: ``what``, then the engine's ``failure`` (value-free)."""
    try:
        yield
    except duckdb.Error as err:
        raise DataError(f"{what} ({failure(err)})", code=code, hint=hint) from None


def check_tables(
    cur: duckdb.DuckDBPyConnection, catalog: Catalog, readers: Mapping[str, str], patterns: Mapping[str, str]
) -> DataError | None:
    """Every table's types and values, read as a question reads them; the first refusal (None: all fit). Out of
    the engine's memory (other questions hold it) it raises: that says nothing of the files."""
    try:
        for name, reader in readers.items():
            if irregular(patterns[name]):
                return not_regular(name)
            table = catalog.tables[name]
            check_types(cur, name, reader, table)
            try:
                read_through(cur, name, table.columns)
            except duckdb.OutOfMemoryException:
                raise
            except duckdb.Error as err:
                return DataError(
                    f"table {name!r}: its file cannot be read through ({runtime_failure(err)})",
                    code="NODE_TABLE_UNREADABLE",
                )
    except DataError as err:
        return err
    except duckdb.OutOfMemoryException:
        raise
    except duckdb.Error as err:
        return DataError(f"cannot read the changed files ({runtime_failure(err)})", code="NODE_TABLE_UNREADABLE")
    return None
