"""A node's configuration file (``node.yaml``)::

node_id: shanghai
listen: 127.0.0.1:50051
catalog: ../federation.yaml          # the federation catalog (relative to this file)
tables:                              # where this region's tables live: files read by DuckDB
  deposits: data/deposits.parquet    # a path or glob; .csv files are read as CSV
  loans: {path: data/loans.csv, format: csv}
# or, every table of the node on PostgreSQL (a table or a view), its DSN from an environment variable or from a
# file of mode 0600 (never written here):
#   deposits: {postgres: {dsn_env: HPF_PG_DSN}, schema: public, table: deposits}
#   loans: {postgres: {dsn_file: secrets/pg.dsn}, schema: hpf, table: loans_view}
tls: {ca: pki/ca.pem, cert: pki/nodes/shanghai.pem, key: pki/nodes/shanghai.key}
# insecure: true                     # plaintext, local development only (logs a warning)
policy: policies/shanghai.yaml       # who may ask what (default: the packaged policies/default.yaml)
state_dir: state                     # the audit log (audit/) and its signing key
revocations: pki/crl.pem             # the federation's revocation list, re-read when it changes
# revocation_state: state/revocation-state.json  # the newest list's number, so an older list is refused (default)
# federation_ca: pki/ca.pem          # CA for signed questions (default: the TLS CA; needed when insecure)
# envelope_window_s: 300             # how far a question's signing time may be from this node's clock
# audit_fsync: true                  # flush every audit entry to disk before answering
# consent_revocations: {shanghai-consent: consent/revocations.json}  # each consent issuer's list (hpf consent revoke)
#                                    # the number of each list in force is kept in state/consent-revocation-state.json
# limits: {query_ms: 3000, memory: 2GB}  # this node's own limits on one question's scan (see below)
# metrics: {listen: 127.0.0.1:9464}  # Prometheus metrics (none without it); off loopback only with tls: true

``limits`` are the node's own: a scan that runs past ``query_ms`` is interrupted and the asker gets the same
masked failure mark as for any failure on the rows, on time; so keep ``query_ms`` well under the coordinator's
``min_deadline_ms`` (the federation's floor for how long the regions are waited for). ``memory`` bounds the
engine's buffers (DuckDB's ``memory_limit``); a question that outgrows it fails the same way.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from hpf.federation.config_files import load_model, resolve_path
from hpf.federation.errors import ConfigError
from hpf.federation.metrics import MetricsSettings, check_metrics
from hpf.federation.private_files import read_regular
from hpf.federation.trust.envelope import TrustSettings
from hpf.federation.trust.tls import PartySettings

REVOCATION_STATE = "revocation-state.json"


class TableSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Path
    format: Literal["parquet", "csv"] | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, v: Path, info: ValidationInfo) -> Path:
        return resolve_path(v, info)

    @property
    def file_format(self) -> str:
        if self.format:
            return self.format
        return "csv" if str(self.path).lower().endswith((".csv", ".csv.gz")) else "parquet"


MAX_DSN_FILE_BYTES = 64 * 1024  # far past any connection string


class PostgresDsn(BaseModel):
    """Where a PostgreSQL connection string is: an environment variable's name, or a file only its owner may read.
    The string itself is never in a configuration file, a log or an error (it may hold a password)."""

    model_config = ConfigDict(extra="forbid")
    dsn_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    dsn_file: Path | None = None

    @field_validator("dsn_file")
    @classmethod
    def _file(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return None if v is None else resolve_path(v, info)

    @model_validator(mode="after")
    def _one(self) -> PostgresDsn:
        if (self.dsn_env is None) == (self.dsn_file is None):
            raise ValueError("name exactly one of dsn_env and dsn_file")
        return self

    def read(self) -> str:
        """The connection string (``NODE_DSN_MISSING`` when it is not there, ``NODE_DSN_UNSAFE`` for a file that
        others may read or write). No message names any part of it."""
        if self.dsn_env is not None:
            dsn = os.environ.get(self.dsn_env, "").strip()
            where = f"the environment variable {self.dsn_env}"
        else:
            assert self.dsn_file is not None
            where = f"the file {self.dsn_file}"
            try:
                info = self.dsn_file.stat()
                if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077:
                    raise ConfigError(
                        f"the node's database connection string is in {where}, which others may read or write",
                        code="NODE_DSN_UNSAFE",
                        hint=f"make it a regular file only its owner may read: chmod 600 {self.dsn_file}",
                    )
                # a FIFO put in its place since is never waited on, a file past any connection string never read
                dsn = read_regular(self.dsn_file, MAX_DSN_FILE_BYTES).decode("utf-8").strip()
            except (OSError, UnicodeDecodeError):
                dsn = ""
        if not dsn:
            raise ConfigError(
                f"the node's database connection string is missing: {where} is unset, empty or unreadable",
                code="NODE_DSN_MISSING",
                hint="give the node a PostgreSQL connection string (e.g. postgresql://user@host:5432/db) there",
            )
        return dsn


class PostgresTable(BaseModel):
    """A catalog table held in PostgreSQL: a table or view ``schema.table`` of the database ``postgres`` names."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    postgres: PostgresDsn
    db_schema: str = Field(default="public", alias="schema", min_length=1, max_length=63)
    table: str = Field(min_length=1, max_length=63)


class SparkSource(BaseModel):
    """Where Spark reads a catalog table: a table or view of its own catalog (Hive, Delta ...: ``table``), or
    files (``path`` with their ``format``)."""

    model_config = ConfigDict(extra="forbid")
    table: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}$")
    path: str | None = Field(default=None, min_length=1, max_length=4096)
    format: Literal["parquet", "orc", "delta", "csv", "json"] = "parquet"

    @model_validator(mode="after")
    def _one(self) -> SparkSource:
        if (self.table is None) == (self.path is None):
            raise ValueError("name exactly one of table and path")
        return self


class SparkTable(BaseModel):
    """A catalog table a Spark cluster reads."""

    model_config = ConfigDict(extra="forbid")
    spark: SparkSource


class SparkSettings(BaseModel):
    """The Spark a node on Spark runs its questions on: ``master`` (``local[*]``, ``spark://host:7077``,
    ``yarn``, ``k8s://...``) and settings passed to the session as they are (``conf``)."""

    model_config = ConfigDict(extra="forbid")
    master: str = Field(default="local[*]", min_length=1, max_length=1024)
    app_name: str = Field(default="hpf-node", min_length=1, max_length=200)
    conf: dict[str, str] = {}
    start_wait_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="how long the node waits at start for its cluster to run a job; past it, it serves as unwell "
        "(NODE_UNWELL) until the cluster can",
    )


class NodeLimits(BaseModel):
    """What one question may take of this node: scan time and engine memory."""

    model_config = ConfigDict(extra="forbid")
    query_ms: int = Field(default=3_000, ge=10, le=600_000)
    memory: str = Field(default="2GB", pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")


class LookupFacts(BaseModel):
    """When a node on PostgreSQL computes its per-person lookup facts again (a node on files does when a file
    changes; either does at once on ``hpf node refresh``)."""

    model_config = ConfigDict(extra="forbid")
    refresh_s: int = Field(
        default=900,
        ge=1,
        le=86_400,
        description="seconds between two computations of the lookup facts from the database: a lookup may miss "
        "a change younger than this",
    )


class NodeConfig(PartySettings, TrustSettings):
    node_id: str
    listen: str = "127.0.0.1:50051"
    catalog: Path
    tables: dict[str, TableSource | PostgresTable | SparkTable]
    spark: SparkSettings = SparkSettings()
    # questions scanning at once; one past them waits for a slot only while it can still answer within the
    # coordinator's wait, else it answers the masked failure mark on time (the server has more threads than this,
    # so a waiting question never keeps a health check or an explain waiting)
    max_workers: int = Field(default=8, ge=1, le=256)
    duckdb_threads: int | None = Field(
        default=None, ge=1, le=256, description="DuckDB worker threads (default: all cores)"
    )
    policy: Path | None = None
    state_dir: Path = Path("state")
    audit_fsync: bool = True
    limits: NodeLimits = NodeLimits()
    lookup_facts: LookupFacts = LookupFacts()
    consent_revocations: dict[str, Path] = {}  # consent issuer id -> its signed revocation list, re-read on change
    metrics: MetricsSettings | None = None  # where its Prometheus metrics are served (none without it)

    @field_validator("catalog", "state_dir")
    @classmethod
    def _catalog(cls, v: Path, info: ValidationInfo) -> Path:
        return resolve_path(v, info)

    @field_validator("consent_revocations")
    @classmethod
    def _consent_lists(cls, v: dict[str, Path], info: ValidationInfo) -> dict[str, Path]:
        return {issuer: resolve_path(path, info) for issuer, path in v.items()}

    @model_validator(mode="after")
    def _metrics(self) -> NodeConfig:
        check_metrics(self.metrics, self.tls)
        return self

    @model_validator(mode="after")
    def _revocation_state(self) -> NodeConfig:
        if self.revocation_state is None:  # the number of the newest revocation list accepted outlives a restart
            self.revocation_state = self.state_dir / REVOCATION_STATE
        return self

    @field_validator("policy")
    @classmethod
    def _policy(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return None if v is None else resolve_path(v, info)

    @field_validator("tables", mode="before")
    @classmethod
    def _short_form(cls, v: object) -> object:
        if isinstance(v, dict):
            return {k: ({"path": s} if isinstance(s, str) else s) for k, s in v.items()}
        return v

    @model_validator(mode="after")
    def _one_backend(self) -> NodeConfig:
        if len({type(s) for s in self.tables.values()}) > 1:  # a question reads its tables through one engine
            raise ValueError(
                "tables: put every table of a node on files, every one on PostgreSQL or every one on Spark, not a mix"
            )
        return self

    @property
    def on_postgres(self) -> dict[str, PostgresTable]:
        """The tables on PostgreSQL (every one, or none: see :meth:`_one_backend`)."""
        return {n: s for n, s in self.tables.items() if isinstance(s, PostgresTable)}

    @property
    def on_spark(self) -> dict[str, SparkTable]:
        """The tables on Spark (every one, or none)."""
        return {n: s for n, s in self.tables.items() if isinstance(s, SparkTable)}

    @property
    def on_files(self) -> dict[str, TableSource]:
        """The tables on files."""
        return {n: s for n, s in self.tables.items() if isinstance(s, TableSource)}


def load_node_config(path: Path | str, *, insecure: bool = False) -> NodeConfig:
    """Load the file; ``insecure`` is the command line's explicit ``--insecure``."""
    return load_model(path, NodeConfig, {"insecure": True} if insecure else None)
