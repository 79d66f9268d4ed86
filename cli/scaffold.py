"""`hpf init`'s work: a federation laid out for the user's own Parquet or CSV files.

From each region's files it reads the tables' schemas (as a node's reader will read them) and writes, under one
folder: the catalog (``federation.yaml``, each column's type inferred and its class left for an operator to
decide), the CA and every party's certificate (``pki/``), each node's state with its keys (published in the
catalog), one config per node, the coordinator's config, a node policy that extends the packaged base policy, and
a client profile per person. It never guesses a column's class: a column without one is refused by every policy
until an operator classifies it, so nothing but ``COUNT(*)`` can be asked before that.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from hpf.federation.catalog import INTEGER_BITS, INTEGER_DIGITS
from hpf.federation.catalog import INTEGER_TYPES as _INTEGERS
from hpf.federation.errors import ConfigError

if TYPE_CHECKING:
    import duckdb

Progress = Callable[[str], None]

INIT_ARGS = "INIT_ARGS"
INIT_SCHEMA = "INIT_SCHEMA"
CLASSES = ("identifier", "public", "sensitive", "commercial")
_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_DECIMAL = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")
# a file type the catalog has no type for, read as the narrowest catalog type that holds every value
_WIDER = {
    "UTINYINT": "SMALLINT",
    "USMALLINT": "INTEGER",
    "UINTEGER": "BIGINT",
    "UBIGINT": "DECIMAL(20,0)",
    "HUGEINT": "DECIMAL(38,0)",
    "FLOAT": "DOUBLE",
}
_SAME = (*_INTEGERS, "VARCHAR", "DATE", "BOOLEAN", "DOUBLE")
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
        if not _NAME.fullmatch(table):
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


def catalog_type(file_type: str) -> str | None:
    """The catalog type a file column is declared as: its own where the catalog has it, else the narrowest that
    holds every value; None for a type the catalog cannot hold (timestamps, lists, ...).

    >>> [catalog_type(t) for t in ("INTEGER", "DECIMAL(15,2)", "UBIGINT", "FLOAT", "TIMESTAMP")]
    ['INTEGER', 'DECIMAL(15,2)', 'DECIMAL(20,0)', 'DOUBLE', None]
    """
    t = file_type.upper().replace(" ", "")
    if t in _SAME or _DECIMAL.fullmatch(t):
        return t
    return _WIDER.get(t)


def widest(a: str, b: str) -> str | None:
    """A catalog type holding every value of both ``a`` and ``b`` exactly, or None.

    >>> widest("INTEGER", "BIGINT"), widest("DECIMAL(15,2)", "DECIMAL(12,4)"), widest("INTEGER", "DECIMAL(9,2)")
    ('BIGINT', 'DECIMAL(17,4)', 'DECIMAL(12,2)')
    >>> widest("VARCHAR", "INTEGER") is None
    True
    """
    if a == b:
        return a
    if a in _INTEGERS and b in _INTEGERS:
        return max(a, b, key=_INTEGERS.index)

    def shape(t: str) -> tuple[int, int] | None:  # (digits before the point, digits after)
        if t in INTEGER_DIGITS:
            return INTEGER_DIGITS[t], 0
        m = _DECIMAL.fullmatch(t)
        return (int(m.group(1)) - int(m.group(2)), int(m.group(2))) if m else None

    sa, sb = shape(a), shape(b)
    if sa is None or sb is None:
        return None
    whole, scale = max(sa[0], sb[0]), max(sa[1], sb[1])
    return f"DECIMAL({whole + scale},{scale})" if whole + scale <= 38 else None


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
            if type_ == "DOUBLE" and _NAME.fullmatch(column):  # any other is left out: never put into SQL
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


def _shown(text: str) -> str:
    """Text of the files (a column name, a type) as it may stand in a comment of the catalog: as it is where it
    is plain, else quoted with every quote, control character and line break escaped, so it can never end the
    comment and write YAML of its own.

    >>> _shown("l_extra"), _shown('zz\\n  extra: {c: 1}'), _shown("a\\u2028b")
    ('l_extra', '"zz\\\\n  extra: {c: 1}"', '"a\\\\u2028b"')
    """
    quoted = json.dumps(text, ensure_ascii=False)
    quoted = "".join(f"\\u{ord(c):04x}" if c in "\x85\u2028\u2029" or not c.isprintable() else c for c in quoted)
    return text if quoted[1:-1] == text else quoted


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
        if not _NAME.fullmatch(column):
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
        if column.type in ("VARCHAR", "BOOLEAN", *_INTEGERS):
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
        decimal = _DECIMAL.fullmatch(declared)
        if declared not in _INTEGERS and decimal is None:
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
            fit = next(t for t in _INTEGERS if bound < 2 ** (INTEGER_BITS[t] - 1))
            if _INTEGERS.index(fit) < _INTEGERS.index(declared):
                column.narrowest = fit


def suggested_bounds(extremes: tuple[Decimal, Decimal], type_: str) -> tuple[Decimal, Decimal]:
    """Bounds round enough to say little about the files' extremes: each a power of ten past the farthest value
    on its side (0 on a side no value reaches), within what ``type_`` holds.

    >>> suggested_bounds((Decimal("0.00"), Decimal("104949.50")), "DECIMAL(15,2)")
    (Decimal('0'), Decimal('1000000'))
    >>> suggested_bounds((Decimal("-3"), Decimal("0.07")), "DECIMAL(3,2)")
    (Decimal('-9.99'), Decimal('0.1'))
    >>> suggested_bounds((Decimal("1"), Decimal("12000")), "SMALLINT")
    (Decimal('0'), Decimal('32767'))
    """
    decimal = _DECIMAL.fullmatch(type_)
    if decimal is not None:
        precision, scale = int(decimal.group(1)), int(decimal.group(2))
        top = Decimal(10) ** (precision - scale) - Decimal(10) ** -scale
    else:
        scale, top = 0, Decimal(2 ** (INTEGER_BITS[type_] - 1) - 1)

    def past(value: Decimal) -> Decimal:
        if value <= 0:
            return Decimal(0)
        power = Decimal(10) ** -scale
        while power < value:
            power *= 10
        return Decimal(format(min(power, top).normalize(), "f"))

    return (-past(-extremes[0]) if extremes[0] < 0 else Decimal(0), past(extremes[1]))


def parse_classes(items: Sequence[str], tables: dict[str, InferredTable]) -> dict[tuple[str, str], str]:
    """``[TABLE.]COLUMN=CLASS`` options: the classes the operator gives on the command line."""
    out: dict[tuple[str, str], str] = {}
    for item in items:
        target, sep, cls = item.partition("=")
        table, dot, column = target.rpartition(".")
        if not sep or cls not in CLASSES:
            raise ConfigError(
                f"--class {item!r}: expected [TABLE.]COLUMN=CLASS, CLASS one of {', '.join(CLASSES)}",
                code=INIT_ARGS,
            )
        matches = [
            (t.name, c.name)
            for t in tables.values()
            if not dot or t.name == table
            for c in t.columns
            if c.name == column
        ]
        if not matches:
            raise ConfigError(f"--class {item!r}: no such column in the files", code=INIT_ARGS)
        for match in matches:
            if out.get(match, cls) != cls:
                raise ConfigError(
                    f"--class {item!r}: {match[0]}.{match[1]} is given two classes ({out[match]} and {cls})",
                    code=INIT_ARGS,
                    hint="give each column one class",
                )
            out[match] = cls
    return out


def catalog_text(
    federation: str,
    addresses: dict[str, str],
    keys: dict[str, tuple[str, str]],
    tables: dict[str, InferredTable],
    classes: dict[tuple[str, str], str],
    he_format: str,
    *,
    narrow: bool = False,
) -> str:
    """The catalog, with a comment on every decision left to the operator (``narrow``: declare each number
    column with the narrowest type holding the files' values, saying what the files hold)."""
    lines = [
        "# The federation catalog, written by `hpf init` from the regions' files. Every party holds a copy.",
        "# Before asking anything but COUNT(*): give each column its class (identifier | public | sensitive |",
        "# commercial); a column without one is refused by every policy. A `domain` makes a column groupable",
        "# (the suggested ones list the values seen in the files: a domain publishes them to every party);",
        "# differentially private roles need `bounds` on summed columns and a table's `contribution`. These",
        "# comments are in the file every party holds, the coordinator too: delete the suggestions you do not",
        "# take before you hand it out.",
        "# Check it with `hpf catalog check`; every node and the coordinator read it at start.",
        f"federation: {federation}",
        f"he_format: {he_format}",
        "nodes:",
    ]
    for node_id, address in addresses.items():
        audit_key, agreement_key = keys[node_id]
        lines.append(
            f'  - {{id: {node_id}, address: "{address}", audit_key: "{audit_key}", agreement_key: "{agreement_key}"}}'
        )
    lines.append("tables:")
    for table in tables.values():
        lines += [f"  {table.name}:", "    columns:"]
        for c in table.columns:
            assert c.type is not None
            cls = classes.get((table.name, c.name))
            declared = c.narrowest if narrow and c.narrowest else c.type
            lines += [
                f"      {c.name}:",
                f'        type: "{declared}"' if "(" in declared else f"        type: {declared}",
            ]
            if c.narrowest and narrow:
                lines[-1] += f"   # the files hold {c.type}; a node refuses a file with a value this type cannot hold"
            elif c.narrowest and c.two_valued:
                lines[-1] += f"   # {c.narrowest} holds every value in the files"
            elif c.narrowest:
                lines[-1] += f"   # {c.narrowest} holds the bounds below: declare it to sum products of this column"
            lines.append(
                f"        class: {cls}"
                if cls
                else "        # class: TODO   (identifier | public | sensitive | commercial)"
            )
            if c.extremes is not None and c.two_valued:
                lines.append(
                    "        # no bounds suggested: the files hold two values of it, a flag. A product with a flag is "
                    "the sum of one value's rows, which a minimum group size never sees: filter on it instead "
                    "(bounds holding more than two values would let such a product pass as one of quantities)"
                )
            elif c.extremes is not None:
                lo, hi = suggested_bounds(c.extremes, declared)
                lines.append(
                    f"        # bounds: [{lo}, {hi}]   # the files' values lie within: uncomment to sum products of "
                    "it, and for differential privacy"
                )
            if c.domain_values is not None:
                values = yaml.safe_dump(c.domain_values, default_flow_style=True, width=10_000).strip()
                lines.append(
                    f"        # domain: {{values: {values}}}   # the values in the files; uncomment to group by it"
                )
            if c.date_years is not None:
                first, last = c.date_years
                lines.append(
                    f'        # domain: {{range: ["{first}-01-01", "{last}-12-31"]}}   # uncomment to group by it'
                )
        for column, why in table.left_out.items():
            lines.append(f"      # {_shown(column)}: left out, {_shown(why)}")
        lines.append(
            "    # contribution: {person: COLUMN, max_rows: N, max_regions: N}   # TODO for differential privacy"
        )
    return "\n".join(lines) + "\n"


@dataclass
class Scaffold:
    """What `hpf init` wrote, and the commands that start and ask the federation."""

    folder: Path
    regions: list[str]
    tables: dict[str, InferredTable]
    profiles: dict[str, Path]
    unclassified: int

    def node_config(self, region: str) -> Path:
        return self.folder / "nodes" / f"{region}.yaml"

    @property
    def coordinator_config(self) -> Path:
        return self.folder / "coordinator.yaml"

    @property
    def catalog(self) -> Path:
        return self.folder / "federation.yaml"


def scaffold(
    folder: Path,
    federation: str,
    sources: Sequence[Source],
    people: Sequence[tuple[str, str, str | None]],
    class_options: Sequence[str],
    *,
    force: bool,
    narrow: bool = False,
    progress: Progress,
) -> Scaffold:
    """Write a federation for ``sources`` under ``folder`` (see the module's docstring)."""
    from hpf.demo.launcher import free_ports
    from hpf.federation.audit.log import AuditLog
    from hpf.federation.catalog import load_catalog
    from hpf.federation.crypto.he import HE_FORMAT
    from hpf.federation.crypto.sealing import AgreementKey
    from hpf.federation.trust.pki import init_federation

    if not sources:
        raise ConfigError("no --source given", code=INIT_ARGS, hint="e.g. --source north=data/north.parquet")
    folder = folder.resolve()
    catalog_path = folder / "federation.yaml"
    if catalog_path.exists() and not force:
        raise ConfigError(
            f"{catalog_path} exists: this folder holds a federation already",
            code="INIT_EXISTS",
            hint="give another folder, or --force to write it again (keys, certificates and state are kept)",
        )
    regions = list(dict.fromkeys(s.region for s in sources))
    if len(regions) < 3:
        raise ConfigError(
            f"{len(regions)} region(s) given: a federation needs at least 3",
            code=INIT_ARGS,
            hint="a masked sum takes at least 3 regions, so no region's partial can be read from it",
        )
    people = list(people) or [("you", "operator", regions[0])]
    tables = infer_tables(sources, progress)
    classes = parse_classes(class_options, tables)
    folder.mkdir(parents=True, exist_ok=True)
    init_federation(
        folder / "pki",
        regions,
        federation=federation,
        clients=people,
        force=force,
    )
    progress(f"certificates: {folder / 'pki'} (a CA for {federation}, {len(regions)} nodes, {len(people)} people)")
    keys: dict[str, tuple[str, str]] = {}
    for region in regions:
        state = folder / "state" / region
        with AuditLog.open(state / "audit", region, check_all_signatures=False) as log:
            audit_key = log.public_key_b64()
        keys[region] = (audit_key, AgreementKey.load_or_create(state).public_b64())
    ports = free_ports(len(regions) + 1)
    addresses = {r: f"127.0.0.1:{p}" for r, p in zip(regions, ports[1:], strict=True)}
    text = catalog_text(federation, addresses, keys, tables, classes, HE_FORMAT, narrow=narrow)
    catalog_path.write_text(text, encoding="utf-8")
    load_catalog(catalog_path)  # what was written must be a catalog every party reads
    progress(f"catalog: {catalog_path}")
    policy = folder / "policies" / "node.yaml"
    _write(policy, POLICY_TEXT)
    by_region: dict[str, dict[str, str]] = {}
    for s in sources:
        by_region.setdefault(s.region, {})[s.table] = str(s.path)
    for region in regions:
        _dump(
            folder / "nodes" / f"{region}.yaml",
            {
                "node_id": region,
                "listen": addresses[region],
                "catalog": "../federation.yaml",
                "tables": by_region[region],
                "tls": _tls(f"nodes/{region}"),
                "revocations": "../pki/crl.pem",
                "policy": "../policies/node.yaml",
                "state_dir": f"../state/{region}",
            },
        )
    _dump(
        folder / "coordinator.yaml",
        {
            "listen": f"127.0.0.1:{ports[0]}",
            "catalog": "federation.yaml",
            "revocations": "pki/crl.pem",
            "revocation_state": "state/coordinator/revocation-state.json",
            "tls": {k: v.removeprefix("../") for k, v in _tls("coordinator").items()},
        },
    )
    profiles: dict[str, Path] = {}
    for i, (name, role, _) in enumerate(people):
        path = folder / ("client.yaml" if i == 0 else f"client-{name}.yaml")
        _dump(
            path,
            {
                "coordinator": f"127.0.0.1:{ports[0]}",
                "catalog": "federation.yaml",
                "keys": f"keys/{name}.bfv",
                "receipts": f"receipts/{name}.jsonl",
                **({"purpose": ROLE_PURPOSE[role]} if role in ROLE_PURPOSE else {}),
                "tls": {k: v.removeprefix("../") for k, v in _tls(f"people/{name}").items()},
            },
        )
        profiles[name] = path
    unclassified = sum(1 for t in tables.values() for c in t.columns if (t.name, c.name) not in classes)
    return Scaffold(folder, regions, tables, profiles, unclassified)


# the purpose a role's questions carry by default in the profiles `hpf init` writes (the base policy asks one of
# these roles for a purpose on every table)
ROLE_PURPOSE = {"operator": "operations", "analyst": "statistics"}

POLICY_TEXT = """\
# This federation's node policy, written by `hpf init`: the packaged base policy (`hpf policy show` prints it
# merged), which grants nothing on a column until the catalog gives it a class. Tighten or extend it here, e.g.
#   roles:
#     analyst:
#       tables:
#         lineitem: {columns: {l_comment: []}}
version: 1
extends: hpf:base
description: written by hpf init
"""


def _tls(name: str) -> dict[str, str]:
    return {"ca": "../pki/ca.pem", "cert": f"../pki/{name}.pem", "key": f"../pki/{name}.key"}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _dump(path: Path, doc: object) -> None:
    _write(path, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
