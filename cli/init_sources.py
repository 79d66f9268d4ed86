"""What `hpf init` reads of the regions' files: the sources given (``REGION[:TABLE]=PATH``), and each table's
columns with the types every region's files carry, read as a node's reader reads them, the values of the few
columns worth a suggested domain, and the extremes of the number columns."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from hpf.cli.init_column_types import DECIMAL_TYPE, catalog_type, suggested_bounds, widest
from hpf.federation.catalog import INTEGER_BITS, INTEGER_TYPES
from hpf.federation.errors import ConfigError

if TYPE_CHECKING:
    import duckdb

Progress = Callable[[str], None]

INIT_ARGS = "INIT_ARGS"
INIT_SCHEMA = "INIT_SCHEMA"
NAME = re.compile(r"[a-z_][a-z0-9_]*")  # a table or column name `hpf init` writes into a catalog
DOMAIN_MAX_VALUES = 12  # a column with at most this many distinct values gets a suggested domain
DOMAIN_MIN_ROWS = 10  # ... if each value occurs at least this often in every region's files
INIT_MEMORY = "2GB"  # what the engine reading the files may hold (it spills past it)


@dataclass(frozen=True)
class Source:
    """One table's files at one region: ``REGION[:TABLE]=PATH`` (TABLE defaults to the file's name)."""

    region: str
    table: str
    path: Path

    @classmethod
    def parse(cls, text: str) -> Source:
        head, sep, path = text.partition("=")
        if not sep or not head or not path:
            raise ConfigError(
                f"--source {text!r}: expected REGION=PATH or REGION:TABLE=PATH",
                code=INIT_ARGS,
                hint="e.g. --source north=data/north/lineitem.parquet (table lineitem)",
            )
        region, _, table = head.partition(":")
        file = Path(path).expanduser()
        table = table or _stem(file)
        if not NAME.fullmatch(table):
            raise ConfigError(
                f"--source {text!r}: table name {table!r} must be lower-case letters, digits and _",
                code=INIT_ARGS,
                hint="name the table: REGION:TABLE=PATH",
            )
        return cls(region=region, table=table, path=file.resolve())

    @property
    def file_format(self) -> str:
        return "csv" if self.path.name.lower().endswith((".csv", ".csv.gz")) else "parquet"


def _stem(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".csv.gz", ".parquet", ".csv"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem.lower()


@dataclass
class InferredColumn:
    name: str
    type: str | None  # None: the files' type has no catalog type (the column is left out)
    file_types: dict[str, str]  # region: the type its files carry
    domain_values: list[object] | None = None  # a suggestion, for the operator to confirm
    narrowest: str | None = None  # the narrowest type holding every value in the files, where narrower than type
    extremes: tuple[Decimal, Decimal] | None = None  # the least and greatest value in the files (never written)
    two_valued: bool = False  # the files hold at most two values of this number column: a flag, given no bounds
    date_years: tuple[int, int] | None = None


@dataclass
class InferredTable:
    name: str
    columns: list[InferredColumn] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)  # column: why


def reader(source: Source) -> str:
    from hpf.node.backends.duckdb_backend import reader_sql

    return reader_sql(source.path, source.file_format)


def infer_tables(sources: Sequence[Source], progress: Progress) -> dict[str, InferredTable]:
    """Each table's columns and their types, as every region's files carry them."""
    import duckdb

    from hpf.federation.engine import locked_connection

    regions = sorted({s.region for s in sources})
    by_table: dict[str, dict[str, Source]] = {}
    for s in sources:
        if s.region in by_table.setdefault(s.table, {}):
            raise ConfigError(
                f"table {s.table!r} is given twice for region {s.region!r}",
                code=INIT_ARGS,
                hint="give one path per region and table (a glob such as dir/*.parquet reads several files)",
            )
        by_table[s.table][s.region] = s
    tables: dict[str, InferredTable] = {}
    # as a node reads them: an engine that reads the sources' folders and nothing else, installs nothing
    con = locked_connection(readable=_folders(sources), memory_limit=INIT_MEMORY, threads=None)
    try:
        for name, at in sorted(by_table.items()):
            lacking = [r for r in regions if r not in at]
            if lacking:
                raise ConfigError(
                    f"table {name!r} has no files for region(s) {', '.join(lacking)}",
                    code=INIT_ARGS,
                    hint=f"every region holds every table: add --source {lacking[0]}:{name}=PATH",
                )
            schemas = {r: _describe(con, s) for r, s in at.items()}
            tables[name] = _merge(name, schemas)
            try:
                _suggest_domains(con, tables[name], at)
                _narrowest(con, tables[name], at)
            except duckdb.Error as err:  # its message may quote a value of the files: not shown
                raise ConfigError(
                    f"table {name!r}: its files cannot be read whole with the column types detected from their first "
                    f"rows ({type(err).__name__})",
                    code=INIT_SCHEMA,
                    hint="a CSV reader detects each column's type from a sample of rows: write every row of a column "
                    "as one type, or give Parquet files, which carry their types",
                ) from None
            progress(f"table {name}: {len(tables[name].columns)} column(s) read from {len(at)} region(s)")
    finally:
        con.close()
    return tables


def _folders(sources: Sequence[Source]) -> list[Path]:
    """The folders holding the sources' files (a glob's folder is the part before its first wildcard)."""
    folders = []
    for source in sources:
        text = str(source.path)
        cut = min((text.find(c) for c in "*?[" if c in text), default=-1)
        folders.append(Path(text[:cut]).parent if cut >= 0 else Path(text).parent)
    return folders


def _describe(con: duckdb.DuckDBPyConnection, source: Source) -> dict[str, str]:
    import duckdb

    if not any(Path(p).exists() for p in _glob(source.path)):
        raise ConfigError(f"{source.path}: no such file", code=INIT_ARGS, hint="check the --source path")
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {reader(source)}").fetchall()
    except duckdb.Error as err:
        raise ConfigError(
            f"{source.path}: cannot read it as {source.file_format} ({type(err).__name__})",
            code=INIT_SCHEMA,
            hint="give Parquet files (.parquet) or CSV files with a header row (.csv)",
        ) from None
    types = {str(r[0]): str(r[1]) for r in rows}
    if source.file_format == "csv":
        for column, type_ in types.items():
            if type_ == "DOUBLE" and NAME.fullmatch(column):  # any other is left out: never put into SQL
                types[column] = _csv_decimal(con, source, column) or type_
    return types


def _csv_decimal(con: duckdb.DuckDBPyConnection, source: Source, column: str) -> str | None:
    """The DECIMAL that holds a CSV column's numbers exactly as written, where each is a plain decimal numeral
    (a CSV reader detects ``12.50`` as a DOUBLE, which could not be summed exactly); None otherwise."""
    from hpf.node.backends.duckdb_backend import sql_string

    text = f"read_csv({sql_string(str(source.path))}, header = true, all_varchar = true)"
    col = _ident(column)
    row = con.execute(
        f"SELECT bool_and(regexp_full_match({col}, '-?[0-9]+([.][0-9]+)?')), "
        f"max(length(split_part(ltrim({col}, '-'), '.', 1))), max(length(split_part({col}, '.', 2))) "
        f"FROM {text} WHERE {col} IS NOT NULL"
    ).fetchone()
    if row is None or not row[0]:
        return None
    whole, scale = int(row[1]), int(row[2])  # as tight as the values written: a CSV has no type to keep
    return f"DECIMAL({whole + scale},{scale})" if whole + scale <= 38 else None


def _ident(name: str) -> str:
    """A column name as a quoted SQL identifier: a file's header is data, never SQL."""
    return '"' + name.replace('"', '""') + '"'


def _glob(path: Path) -> list[Path]:
    text = str(path)
    if any(c in text for c in "*?["):
        return sorted(Path(path.anchor).glob(str(path.relative_to(path.anchor))))
    return [path]


def _merge(table: str, schemas: dict[str, dict[str, str]]) -> InferredTable:
    out = InferredTable(table)
    first = next(iter(schemas.values()))
    names = list(first) + [c for s in schemas.values() for c in s if c not in first]
    for column in dict.fromkeys(names):
        file_types = {r: s[column] for r, s in schemas.items() if column in s}
        if len(file_types) < len(schemas):
            lacking = sorted(set(schemas) - set(file_types))
            out.left_out[column] = f"not in the files of {', '.join(lacking)}"
            continue
        if not NAME.fullmatch(column):
            out.left_out[column] = "its name is not lower-case letters, digits and _"
            continue
        kinds = {r: catalog_type(t) for r, t in file_types.items()}
        unsupported = sorted({file_types[r] for r, k in kinds.items() if k is None})
        if unsupported:
            out.left_out[column] = f"{', '.join(unsupported)} is not a catalog type"
            continue
        merged: str | None = None
        for k in kinds.values():
            assert k is not None
            merged = k if merged is None else widest(merged, k)
            if merged is None:
                raise ConfigError(
                    f"table {table!r}, column {column!r}: the regions' files disagree on its type ("
                    + ", ".join(f"{r}: {t}" for r, t in sorted(file_types.items()))
                    + ")",
                    code=INIT_SCHEMA,
                    hint="write the column with one type in every region's files",
                )
        out.columns.append(InferredColumn(column, merged, file_types))
    return out


def _suggest_domains(con: duckdb.DuckDBPyConnection, table: InferredTable, at: dict[str, Source]) -> None:
    """Suggest a group-by domain where every region's files hold only a few values, each of many rows: the
    operator confirms it (a domain publishes its values to every party)."""
    for column in table.columns:
        if column.type in ("VARCHAR", "BOOLEAN", *INTEGER_TYPES):
            seen: dict[object, int] | None = {}
            for source in at.values():
                col, most = _ident(column.name), DOMAIN_MAX_VALUES + 1
                rows = con.execute(f"SELECT {col}, COUNT(*) FROM {reader(source)} GROUP BY 1 LIMIT {most}").fetchall()
                if len(rows) > DOMAIN_MAX_VALUES or any(v is None or n < DOMAIN_MIN_ROWS for v, n in rows):
                    seen = None
                    break
                assert seen is not None
                for v, n in rows:
                    seen[v] = seen.get(v, 0) + n
            if seen and len(seen) <= DOMAIN_MAX_VALUES:
                column.domain_values = sorted(seen, key=str)
        elif column.type == "DATE":
            years = [
                con.execute(
                    f"SELECT MIN(YEAR({_ident(column.name)})), MAX(YEAR({_ident(column.name)})) FROM {reader(source)}"
                ).fetchone()
                for source in at.values()
            ]
            lows = [y[0] for y in years if y and y[0] is not None]
            highs = [y[1] for y in years if y and y[1] is not None]
            if lows and highs:
                column.date_years = (min(lows), max(highs))


def _narrowest(con: duckdb.DuckDBPyConnection, table: InferredTable, at: dict[str, Source]) -> None:
    """For each integer and DECIMAL column, the files' extremes (for suggested bounds) and the narrowest type that
    holds those bounds: summing a product needs narrow factors (a sum must fit in 126 bits for any number of
    rows), and a file's DECIMAL(15,2) often holds values of a few digits."""
    for column in table.columns:
        declared = column.type or ""
        decimal = DECIMAL_TYPE.fullmatch(declared)
        if declared not in INTEGER_TYPES and decimal is None:
            continue
        lows, highs = [], []
        seen: set[Decimal] = set()  # up to three of its values, to tell a flag from a quantity
        for source in at.values():
            col = _ident(column.name)
            row = con.execute(f"SELECT MIN({col}), MAX({col}) FROM {reader(source)}").fetchone()
            if row and row[0] is not None:
                lows.append(row[0])
                highs.append(row[1])
            if len(seen) <= 2:
                values = con.execute(
                    f"SELECT DISTINCT {col} FROM {reader(source)} WHERE {col} IS NOT NULL LIMIT 3"
                ).fetchall()
                seen |= {Decimal(str(v)) for (v,) in values}
        if not lows:
            continue
        column.two_valued = len(seen) <= 2
        lo, hi = min(lows), max(highs)
        column.extremes = (Decimal(str(lo)), Decimal(str(hi)))  # a CSV's numbers may come as floats: as written
        bound = max(abs(b) for b in suggested_bounds(column.extremes, declared))
        if decimal is not None:  # the narrowest DECIMAL that holds the suggested bounds, so they can be declared
            scale = int(decimal.group(2))
            whole = len(str(int(bound))) if bound >= 1 else 0
            if whole + scale < int(decimal.group(1)):
                column.narrowest = f"DECIMAL({max(whole + scale, 1)},{scale})"
        else:
            fit = next(t for t in INTEGER_TYPES if bound < 2 ** (INTEGER_BITS[t] - 1))
            if INTEGER_TYPES.index(fit) < INTEGER_TYPES.index(declared):
                column.narrowest = fit
