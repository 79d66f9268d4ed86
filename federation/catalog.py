"""The federation catalog: nodes, tables, columns, types, scales, classes and group-by domains.

A catalog is a YAML file every party holds a copy of (``federation.yaml``)::

    federation: my-federation
    nodes:
      - id: shanghai
        address: 127.0.0.1:50051
        code: "310000"                        # optional: the region's 6-digit administrative division code
    tables:
      deposits:
        columns:
          person_id: {type: VARCHAR, class: identifier}
          city_code: {type: VARCHAR, class: public, domain: {values: ["310000", "330100"]}}
          month:     {type: DATE, class: public, domain: {range: ["2000-01-01", "2026-12-31"]}}
          amount_fen: {type: BIGINT, class: sensitive}
          remark:    {type: VARCHAR}          # no class yet: every policy refuses it

``class`` says what a column holds, and so what each node's policy lets a role do with it: ``identifier``
(names a person; only ever a WHERE equality, and the shipped policies close even that), ``public``,
``sensitive`` or ``commercial``. A column written without ``class`` (or with ``class: ~``) is unclassified:
the catalog accepts it, so it can be described before anyone has decided, but every policy refuses every use
of it (``POLICY_COLUMN_UNCLASSIFIED``) until an operator gives it a class. Nothing defaults to open.

``domain`` makes a column groupable: ``values`` lists its finite set; ``range`` gives inclusive integer or
date bounds (a date range also bounds ``EXTRACT(YEAR FROM col)``). Values outside a domain fall into an
explicit "other" group, never dropped.

Differentially private answers need to know how much one person can change them. A table declares it with
``contribution`` and a summed column with ``bounds``::

    tables:
      deposits:
        contribution: {person: person_id, max_rows: 600, max_regions: 4}
        columns:
          amount_fen: {type: BIGINT, class: sensitive, bounds: [0, 2000000]}

Under DP a node keeps at most ``max_rows`` rows per person (those with the highest ``prefer`` values first,
e.g. ``prefer: month`` keeps the most recent) and clamps every bounded column into its bounds before summing;
``max_regions`` is the number of regions one person is assumed to hold rows in (no region can check the
others; a person in more regions is protected as a group of that many).

A node's ``code`` (optional) is its region's 6-digit administrative division code; its first two digits are
the region's province. Node policies may admit askers by the province of their home region (``askers:`` in a
node policy): an asker's certificate names a node id as its home region, and the catalog's ``code`` for that
id says which province it is in. Only the catalog places a region: a node without a ``code`` is in no province,
and a province rule admits none of its askers.

``issuers`` (optional, top level) publishes the consent services whose signed grants regions may act on,
each with an id and its Ed25519 public key (``hpf consent keys`` prints the entry)::

    issuers:
      - {id: shanghai-consent, key: <base64>, name: Shanghai HPF consent service}

A node's policy names which of them it accepts.

``he_format`` (optional, top level) names the homomorphic-encryption wire format every party must run, as
``hpf`` states it (``federation.crypto.he.HE_FORMAT``, e.g. ``tenseal-0.3.18/seal-4.3/bfv-4096``): a node or
coordinator whose installed library writes another refuses to start with ``HE_FORMAT_MISMATCH``.

Here are the catalog and its tables; its nodes and issuers are :mod:`federation.catalog_parties`, the nodes' keys
written into the file :mod:`federation.catalog_keys`, and what a new version of the file changes
:mod:`federation.catalog_watch`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hpf.federation.catalog_parties import IssuerEntry, NodeEntry
from hpf.federation.config_files import decode_text, parse_model, parse_yaml, read_bytes
from hpf.federation.crypto.limb_codec import MAX_REGIONS
from hpf.federation.errors import ConfigError

MAX_DOMAIN_SIZE = 10_000

_IDENT = re.compile(r"[a-z_][a-z0-9_]*")  # matched whole (fullmatch), as every pattern here
_DECIMAL = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")
INTEGER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT")
SCALAR_TYPES = (*INTEGER_TYPES, "VARCHAR", "DATE", "BOOLEAN", "DOUBLE")
INTEGER_BITS = {"TINYINT": 8, "SMALLINT": 16, "INTEGER": 32, "BIGINT": 64}
INTEGER_DIGITS = {"TINYINT": 3, "SMALLINT": 5, "INTEGER": 10, "BIGINT": 19}


class ColumnClass(str, Enum):
    identifier = "identifier"
    public = "public"
    sensitive = "sensitive"
    commercial = "commercial"


class Domain(BaseModel):
    """A finite set of values a groupable column can take: a list, or an inclusive range."""

    model_config = ConfigDict(extra="forbid")
    values: list[Any] | None = None
    range: tuple[Any, Any] | None = None
    step: Literal["day", "month", "year"] | None = None  # DATE ranges: which dates of the range occur

    @model_validator(mode="after")
    def _one_of(self) -> Domain:
        if (self.values is None) == (self.range is None):
            raise ValueError("give exactly one of 'values: [...]' or 'range: [low, high]'")
        if self.values is not None and len(self.values) == 0:
            raise ValueError("'values' is empty: list at least one value")
        if self.step is not None and self.range is None:
            raise ValueError("'step' applies only to a DATE 'range'")
        return self


class Column(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: str
    # None: unclassified (no class written), which every policy refuses until an operator sets one
    column_class: ColumnClass | None = Field(default=None, alias="class")
    domain: Domain | None = None
    bounds: tuple[Decimal, Decimal] | None = None  # DP: values are clamped into [low, high] before summing
    description: str | None = None

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, v: tuple[Decimal, Decimal] | None) -> tuple[Decimal, Decimal] | None:
        if v is not None and not (v[0].is_finite() and v[1].is_finite() and v[0] <= v[1]):
            raise ValueError(f"bounds [{v[0]}, {v[1]}] must be two finite numbers, low <= high")
        return v

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        t = re.sub(r"\s+", "", v.upper())
        m = _DECIMAL.fullmatch(t)
        if m:
            p, s = int(m.group(1)), int(m.group(2))
            if not (1 <= p <= 38 and 0 <= s <= p):
                raise ValueError(f"DECIMAL({p},{s}) is invalid: need 1 <= precision <= 38, 0 <= scale <= precision")
            return f"DECIMAL({p},{s})"
        if t.startswith("DECIMAL(") and not t.endswith(")"):
            raise ValueError(f'type {v!r} is cut at a comma: quote it, e.g. type: "DECIMAL(12,2)"')
        if t not in SCALAR_TYPES:
            raise ValueError(f"unsupported type {v!r}: use one of {', '.join(SCALAR_TYPES)} or DECIMAL(p,s)")
        return t

    def _bounds_fit_type(self, bounds: tuple[Decimal, Decimal]) -> None:
        """Bounds are values of the column's own type: DP clamps with them, and a bound the type cannot hold (or
        with more decimals than its scale) would make the engine convert every value, and fail on some."""
        m = _DECIMAL.fullmatch(self.type)
        precision, scale = (int(m.group(1)), int(m.group(2))) if m else (INTEGER_DIGITS[self.type], 0)
        top = Decimal(10) ** (precision - scale) if m else Decimal(2) ** (INTEGER_BITS[self.type] - 1)
        for b in bounds:
            exponent = b.as_tuple().exponent
            places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
            if places > scale or not -top <= b < top:
                raise ValueError(
                    f"bounds [{bounds[0]}, {bounds[1]}] must be values of {self.type}: within its range, with at "
                    f"most {scale} decimal places"
                )

    @model_validator(mode="after")
    def _domain_fits_type(self) -> Column:
        if self.bounds is not None and not (self.type in INTEGER_TYPES or self.type.startswith("DECIMAL")):
            raise ValueError(f"'bounds' needs an integer or DECIMAL column, not {self.type}")
        if self.bounds is not None:
            self._bounds_fit_type(self.bounds)
        d = self.domain
        if d is None:
            return self
        if self.column_class == ColumnClass.identifier:
            raise ValueError("an identifier column cannot have a group-by domain")
        if d.values is not None:
            d.values = [_coerce(self.type, v) for v in d.values]
            if len(set(d.values)) != len(d.values):  # after coercion: 1 and "1" are one INTEGER value
                raise ValueError("'values' lists a value twice")
        if d.range is not None:
            if self.type not in (*INTEGER_TYPES, "DATE"):
                raise ValueError(f"'range' needs an integer or DATE column, not {self.type}; use 'values'")
            lo, hi = (_coerce(self.type, v) for v in d.range)
            if lo > hi:
                raise ValueError(f"range low {lo} is above high {hi}")
            if d.step is not None and self.type != "DATE":
                raise ValueError("'step' applies only to a DATE range")
            if self.type != "DATE" and hi - lo + 1 > MAX_DOMAIN_SIZE:
                raise ValueError(f"range has {hi - lo + 1} values; at most {MAX_DOMAIN_SIZE} are groupable")
            d.range = (lo, hi)
        return self

    def domain_values(self) -> list[Any] | None:
        """The explicit finite value list of a groupable column (None if it is not groupable as is)."""
        d = self.domain
        if d is None:
            return None
        if d.values is not None:
            return list(d.values)
        assert d.range is not None
        lo, hi = d.range
        if self.type == "DATE":
            return _date_steps(lo, hi, d.step or "day")  # None when too many: groupable only through EXTRACT
        return list(range(lo, hi + 1))


def _date_steps(lo: dt.date, hi: dt.date, step: str) -> list[dt.date] | None:
    """Every day, first-of-month or first-of-year date in [lo, hi]; None past MAX_DOMAIN_SIZE values."""
    if step == "day":
        days = (hi - lo).days + 1
        return [lo + dt.timedelta(days=i) for i in range(days)] if days <= MAX_DOMAIN_SIZE else None
    out: list[dt.date] = []
    year, month = lo.year, lo.month
    if step == "year":
        year, month = (lo.year, 1) if (lo.month, lo.day) == (1, 1) else (lo.year + 1, 1)
    elif lo.day != 1:
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    while (current := dt.date(year, month, 1)) <= hi:
        out.append(current)
        if len(out) > MAX_DOMAIN_SIZE:
            return None
        if step == "year":
            year += 1
        else:
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def _coerce(type_: str, value: Any) -> Any:
    """Turn a YAML domain value into the Python value DuckDB returns for that column type."""
    try:
        if type_ in INTEGER_TYPES:
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise TypeError
            return int(value)
        if type_ == "DATE":
            if isinstance(value, dt.datetime):  # YAML reads `2020-01-01 10:00` as a time, which no DATE equals
                raise TypeError
            if isinstance(value, dt.date):
                return value
            return dt.date.fromisoformat(str(value))
        if type_ == "BOOLEAN":
            if not isinstance(value, bool):
                raise TypeError
            return value
        if type_ == "VARCHAR":
            if not isinstance(value, str | int):
                raise TypeError
            return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"domain value {value!r} is not a {type_}") from None
    raise ValueError(f"a {type_} column cannot have a group-by domain; only integer, DATE, VARCHAR, BOOLEAN can")


class Contribution(BaseModel):
    """How much of a table one person can hold: what bounds a differentially private answer's sensitivity."""

    model_config = ConfigDict(extra="forbid")
    person: str  # the column naming the person (an identifier column)
    max_rows: int = Field(ge=1, le=1_000_000)  # rows per person a node keeps under DP (after the WHERE)
    max_regions: int = Field(default=1, ge=1, le=MAX_REGIONS)  # regions one person is assumed to hold rows in
    # which of a person's rows are kept first: those with the highest values of this column (e.g. month: the
    # most recent); ties, and every row when it is not given, in the order of all columns
    prefer: str | None = None


class Table(BaseModel):
    model_config = ConfigDict(extra="forbid")
    columns: dict[str, Column]
    contribution: Contribution | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _person_column(self) -> Table:
        c = self.contribution
        person = self.columns.get(c.person) if c is not None else None
        if c is not None and (person is None or person.column_class != ColumnClass.identifier):
            raise ValueError(f"contribution.person {c.person!r} must be an identifier column of this table")
        if c is not None and c.prefer is not None and c.prefer not in self.columns:
            raise ValueError(f"contribution.prefer {c.prefer!r} is not a column of this table")
        return self

    @field_validator("columns")
    @classmethod
    def _names(cls, v: dict[str, Column]) -> dict[str, Column]:
        if not v:
            raise ValueError("a table needs at least one column")
        for name in v:
            if not _IDENT.fullmatch(name):
                raise ValueError(f"column name {name!r} must be lower-case letters, digits and underscores")
        return v

    def view_sql(self, name: str, source: str) -> str:
        """A DuckDB view ``name`` over ``source`` (e.g. ``read_parquet(...)``) with every column cast to its
        catalog type: how a node reads its files, and how the oracle reads everyone's."""
        cols = ", ".join(f'CAST("{c}" AS {col.type}) AS "{c}"' for c, col in self.columns.items())
        return f'CREATE VIEW "{name}" AS SELECT {cols} FROM {source}'


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")
    federation: str
    # the HE wire format every party must run (federation.crypto.he.HE_FORMAT, e.g. tenseal-0.3.18/seal-4.3/bfv-4096):
    # when given, a party whose installed library writes another refuses to start (HE_FORMAT_MISMATCH)
    he_format: str | None = Field(default=None, min_length=1, max_length=128)
    nodes: list[NodeEntry]
    tables: dict[str, Table]
    issuers: list[IssuerEntry] = []  # consent issuers; a node's policy names the ones it accepts

    @model_validator(mode="after")
    def _checks(self) -> Catalog:
        if not self.nodes:
            raise ValueError("'nodes' is empty: list at least one node (id, address)")
        ids = [n.id for n in self.nodes]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"node id(s) {', '.join(dup)} listed twice")
        if len(self.nodes) > MAX_REGIONS:
            raise ValueError(f"at most {MAX_REGIONS} nodes: the encrypted sums are exact up to {MAX_REGIONS} regions")
        if not self.tables:
            raise ValueError("'tables' is empty: declare at least one table")
        issuer_ids = [i.id for i in self.issuers]
        if len(set(issuer_ids)) != len(issuer_ids):
            raise ValueError("an issuer id is listed twice")
        for name in self.tables:
            if not _IDENT.fullmatch(name):
                raise ValueError(f"table name {name!r} must be lower-case letters, digits and underscores")
        return self

    @property
    def node_ids(self) -> list[str]:
        return [n.id for n in self.nodes]

    def region_code(self, node_id: str) -> str | None:
        """The 6-digit code of region ``node_id``: its node entry's ``code``; None for a region the catalog does not
        place (a node id alone says nothing of where a region is: only the catalog every party holds does)."""
        for node in self.nodes:
            if node.id == node_id:
                return node.code
        return None

    def issuer_keys(self, accepted: Iterable[str]) -> dict[str, bytes]:
        """The raw public keys of the ``accepted`` issuers this catalog publishes (an issuer it does not publish
        is left out: its grants are refused as from an unknown issuer)."""
        wanted = set(accepted)
        return {i.id: base64.b64decode(i.key) for i in self.issuers if i.id in wanted}


@dataclass(frozen=True)
class CatalogFile:
    """A catalog as read from its file: what it declares, its text (as the coordinator hands it to clients) and
    the hex SHA-256 of its bytes (as a node describes it)."""

    catalog: Catalog
    text: str
    digest: str


def read_catalog_file(path: Path | str) -> CatalogFile:
    """Read, validate and digest a catalog file, from one read of its bytes: the digest is always of the very
    text the catalog was parsed from, even when the file is being replaced meanwhile."""
    path = Path(path)
    data = read_bytes(path)
    text = decode_text(path, data)
    doc = parse_yaml(path, text)
    if doc is None:
        raise ConfigError(f"{path}: the file is empty", code="CONFIG_INVALID")
    return CatalogFile(parse_model(path, doc, Catalog), text, hashlib.sha256(data).hexdigest())


def load_catalog(path: Path | str) -> Catalog:
    """Load and validate a catalog file."""
    return read_catalog_file(path).catalog
