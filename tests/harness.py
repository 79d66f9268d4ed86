"""A real, small federation for tests: Parquet files per node, a CA, nodes and a coordinator on port 0 with mTLS.

Every server runs in this process on a free port and is always stopped on exit. The oracle is DuckDB over
the union of every node's files.

Minimum group size: a node with ``k`` withholds every group it holds 1 to k-1 rows of (after the WHERE), or
whose aggregates cover or leave out 1 to k-1 of them; the client lists such a group with NULL aggregates. The
oracle for ``SELECT <keys>, <aggregates> FROM t [WHERE ...] GROUP BY <keys>`` (no HAVING, no LIMIT, key values
inside their domains, no FILTER and no NULL argument, so every aggregate covers all of a group's rows) when
every node applies ``k``::

    withheld = fed.oracle_withheld("SELECT <keys>, COUNT(*) FROM t [WHERE ...] GROUP BY <keys>", k)
    expected = harness.mask_withheld(fed.oracle(sql), withheld, n_keys=len(keys))
    # answer.rows == expected (in the ORDER BY's order), answer.withheld_groups == len(withheld)

For HAVING, ORDER BY over aggregates or LIMIT, load ``expected`` into DuckDB and run those clauses there:
a NULL aggregate fails every HAVING comparison, as it does in the client. The pure helpers live in
``group_size_oracle`` (unit tests use them without a federation).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from group_size_oracle import mask_withheld as mask_withheld  # re-exported for end-to-end tests
from group_size_oracle import withheld_oracle

from hpf.client.federation_client import FederationClient
from hpf.client.profile import ClientProfile
from hpf.coordinator.config import CoordinatorConfig
from hpf.coordinator.server import RunningCoordinator, start_coordinator
from hpf.federation.audit.keys import KEY as AUDIT_KEY
from hpf.federation.audit.log import AuditLog
from hpf.federation.catalog import Catalog, load_catalog
from hpf.federation.config_files import parse_model
from hpf.federation.consent import revocations as consent_revocations
from hpf.federation.consent import tokens as consent
from hpf.federation.consent.issuer import issue_batch, public_raw
from hpf.federation.crypto.he import ClientKeys, context_digest
from hpf.federation.crypto.sealing import AGREEMENT_KEY, AgreementKey
from hpf.federation.errors import DataError, FederationError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.generated import hpf_federation_pb2_grpc as pb_grpc
from hpf.federation.hpf_schema import DEMO_CONSENT_ISSUER
from hpf.federation.regions import BY_NODE_ID
from hpf.federation.trust import certificates
from hpf.federation.trust.channels import node_target, secure_channel
from hpf.federation.trust.envelope import Signer
from hpf.federation.trust.pki import init_federation
from hpf.federation.trust.tls import TlsConfig
from hpf.node.backends.duckdb_backend import DuckDBBackend
from hpf.node.config import NodeConfig
from hpf.node.server import RunningNode, start_node

# A permissive test policy whose every role (the default asker, the caseworker, too) gets exact answers; the
# packaged defaults answer only operators exactly (a test of the default's roles passes policy=DEFAULT_POLICY)
# the demo federation's consent service, which the default policy names for integrators' lookups: every test
# catalog publishes it (unless catalog_extra names its own issuers), and Federation.consent_tokens grants with it
DEMO_ISSUER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
DEMO_ISSUER = {"id": DEMO_CONSENT_ISSUER, "key": base64.b64encode(public_raw(DEMO_ISSUER_KEY)).decode()}

OPEN_POLICY = Path(__file__).parent / "fixtures" / "policies" / "open.yaml"
OPEN_LOOKUPS_POLICY = OPEN_POLICY.with_name("open-lookups.yaml")  # open.yaml plus identifier equality filters

# Tables several test files federate alike.
# Deposits with an identifier, free text and every kind of number: for refusals and the SQL surface.
DEPOSIT_TABLES: dict[str, Any] = {
    "deposits": {
        "columns": {
            "person_id": {"type": "VARCHAR", "class": "identifier"},
            "employer": {"type": "VARCHAR", "class": "public"},
            "city_code": {"type": "VARCHAR", "class": "public", "domain": {"values": ["310000", "330100", "320100"]}},
            "month": {"type": "DATE", "class": "public", "domain": {"range": ["2015-01-01", "2024-12-31"]}},
            "amount_fen": {"type": "BIGINT", "class": "public"},
            "balance": {"type": "DECIMAL(12,2)", "class": "public"},
            "score": {"type": "DOUBLE", "class": "public"},
        }
    }
}
# Monthly deposits over four cities and 31 years: a GROUP BY city and month lays out several ciphertexts.
CITIES = ["310000", "330100", "320100", "320500"]
MONTHLY_TABLES: dict[str, Any] = {
    "deposits": {
        "columns": {
            "city_code": {"type": "VARCHAR", "class": "public", "domain": {"values": CITIES}},
            "month": {
                "type": "DATE",
                "class": "public",
                "domain": {"range": ["2000-01-01", "2030-12-31"], "step": "month"},
            },
            "amount_fen": {"type": "BIGINT", "class": "public"},
        }
    }
}


def monthly_rows(seed: int, n: int, amounts: int) -> list[tuple[Any, ...]]:
    """``n`` rows of MONTHLY_TABLES' deposits, amounts in (-amounts, amounts), the same for the same seed."""
    rng = random.Random(seed)
    return [
        (
            rng.choice(CITIES),
            dt.date(rng.randrange(2000, 2031), rng.randrange(1, 13), 1),
            rng.randrange(-amounts, amounts),
        )
        for _ in range(n)
    ]


FEDERATION = "test"  # the catalog's name, which the CA names too: servers are coordinator.test, <id>.node.test


@dataclass
class Federation:
    root: Path
    catalog_path: Path
    catalog: Catalog
    profile_path: Path
    nodes: dict[str, RunningNode]
    coordinator: RunningCoordinator
    node_ids: list[str]
    data_files: dict[str, list[Path]] = field(default_factory=dict)  # table -> files of every node
    node_configs: dict[str, NodeConfig] = field(default_factory=dict)
    coordinator_config: CoordinatorConfig | None = None

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    def client(self, keys: ClientKeys | None = None, person: str | None = None) -> FederationClient:
        """A client signing as ``person`` (a name from ``people``; default the caseworker, whose answers are exact
        only under a test policy that says so, such as OPEN_POLICY)."""
        doc = yaml.safe_load(self.profile_path.read_text())
        if person is not None:
            doc["tls"]["cert"] = str(self.pki_dir / "people" / f"{person}.pem")
            doc["tls"]["key"] = str(self.pki_dir / "people" / f"{person}.key")
        profile = parse_model(self.profile_path, doc, ClientProfile)
        return FederationClient(profile, keys=keys)

    def consent_tokens(
        self, ids: Sequence[str], person: str = "bank", purpose: str = "loan-review", days: float = 30
    ) -> list[str]:
        """Each person's consent token from the demo's consent service, granted to ``person`` for ``purpose``."""
        cert = certificates.load_certificate((self.pki_dir / "people" / f"{person}.pem").read_bytes())
        granted = issue_batch(
            DEMO_ISSUER_KEY,
            DEMO_CONSENT_ISSUER,
            ids,
            grantee=consent.grantee_of(cert),
            purpose=purpose,
            facts=consent.FACTS,
            not_after=int(dt.datetime.now(dt.UTC).timestamp() + days * 86_400),
        )
        return [consent.token_text(t) for t in granted]

    def audit_dir(self, node_id: str) -> Path:
        return self.root / "state" / node_id / "audit"

    def oracle(self, sql: str) -> list[tuple[Any, ...]]:
        """DuckDB over the union of all nodes' files: the answer every federated query must equal."""
        con = duckdb.connect(":memory:")
        try:
            for table, files in self.data_files.items():
                listed = ", ".join(f"'{f}'" for f in files)
                con.execute(self.catalog.tables[table].view_sql(table, f"read_parquet([{listed}])"))
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def clamped_oracle(self, sql: str, nodes: Sequence[str] | None = None) -> list[tuple[Any, ...]]:
        """DuckDB over the files of ``nodes`` (default all) as differential privacy sees them, written here
        independently of the nodes' SQL: per region each person's first ``max_rows`` rows (highest ``prefer``
        first, then in the order of all columns), every bounded column clamped into its bounds (NULL stays NULL)."""
        con = duckdb.connect(":memory:")
        try:
            for table, files in self.data_files.items():
                spec = self.catalog.tables[table]
                c = spec.contribution
                own = [p for p in files if nodes is None or p.parent.name in nodes]
                if c is None:
                    parts = [f"SELECT * FROM read_parquet('{p}')" for p in own]
                else:
                    order = ", ".join(
                        [*([f'"{c.prefer}" DESC'] if c.prefer else []), *(f'"{n}"' for n in spec.columns)]
                    )
                    select = ", ".join(
                        f'CASE WHEN "{n}" < {col.bounds[0]} THEN {col.bounds[0]} WHEN "{n}" > {col.bounds[1]} '
                        f'THEN {col.bounds[1]} ELSE "{n}" END AS "{n}"'
                        if col.bounds
                        else f'"{n}"'
                        for n, col in spec.columns.items()
                    )
                    parts = [
                        f"SELECT {select} FROM (SELECT * FROM read_parquet('{p}') QUALIFY row_number() OVER "
                        f'(PARTITION BY "{c.person}" ORDER BY {order}) <= {c.max_rows})'
                        for p in own
                    ]
                con.execute(f"CREATE VIEW {table} AS " + " UNION ALL ".join(parts))
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def sign(self, keys: ClientKeys, sql: str, person: str = "caseworker", max_runs: int = 2) -> pb.SignedEnvelope:
        """A question signed by ``person`` for ``keys``' public context, as the client library would sign it
        (allowing ``max_runs`` runs of it)."""
        people = self.pki_dir / "people"
        signer = Signer.from_files(people / f"{person}.pem", people / f"{person}.key")
        return signer.sign(
            sql=sql, context_digest=context_digest(keys.public_context()), federation=FEDERATION, max_runs=max_runs
        )

    def wait_for_regions(self) -> None:
        """After restarts: the coordinator's channels to every region are connected again."""
        for channel in self.coordinator.channels:
            self.coordinator.run(asyncio.wait_for(channel.channel_ready(), 20))

    def node_oracle(self, node_id: str, sql: str) -> list[tuple[Any, ...]]:
        """DuckDB over ``node_id``'s own files only."""
        files = {t: [p for p in paths if p.parent.name == node_id] for t, paths in self.data_files.items()}
        return dataclasses.replace(self, data_files=files).oracle(sql)

    def node_group_counts(self, group_sql: str) -> dict[str, dict[tuple[Any, ...], int]]:
        """Per node, ``{group key values: count}`` from ``group_sql`` (keys first, ``COUNT(*)`` last) on its files."""
        return {n: {tuple(row[:-1]): int(row[-1]) for row in self.node_oracle(n, group_sql)} for n in self.node_ids}

    def oracle_withheld(self, group_sql: str, k: int) -> dict[tuple[Any, ...], int]:
        """The groups of ``group_sql`` that nodes applying minimum group size ``k`` withhold (see withheld_oracle)."""
        return withheld_oracle(self.node_group_counts(group_sql), k)

    def restart_node(self, node_id: str) -> None:
        """Stop a node and start it again on the same port, from its config, catalog file and state directory."""
        port = self.nodes[node_id].port
        self.nodes[node_id].stop(0)
        self.nodes[node_id] = start_node(self.node_configs[node_id], f"127.0.0.1:{port}")

    def stop_node(self, node_id: str) -> None:
        self.nodes[node_id].stop(0)

    @contextlib.contextmanager
    def node_stubs_as_coordinator(self) -> Iterator[dict[str, pb_grpc.NodeStub]]:
        """Stubs holding the coordinator's certificate: what a compromised coordinator can send each node."""
        pki = self.pki_dir
        tls = TlsConfig(ca=pki / "ca.pem", cert=pki / "coordinator.pem", key=pki / "coordinator.key")
        channels = {
            n: secure_channel(f"127.0.0.1:{node.port}", tls, server_name=node_target(tls, n))
            for n, node in self.nodes.items()
        }
        try:
            yield {n: pb_grpc.NodeStub(ch) for n, ch in channels.items()}
        finally:
            for ch in channels.values():
                ch.close()


@contextlib.contextmanager
def scans_stopped(monkeypatch: pytest.MonkeyPatch, fed: Federation, node_ids: Sequence[str]) -> Iterator[None]:
    """The regions ``node_ids`` stop every scan as at their own time limit (the engine interrupted).

    No value of a row can make an admitted plan fail any more (the planner proves every expression total), so
    what fails a question after admission is a region's own time or memory limit, or the coordinator abandoning
    it; to the asker all of them look alike. This is that failure, on demand.
    """
    backends = {id(fed.nodes[n].handler.executor.backend) for n in node_ids}
    original = DuckDBBackend.run

    def run(self: DuckDBBackend, sql: str, on_abandon: Any = None, finish_by: float | None = None) -> Any:
        if id(self) in backends:
            raise DataError("the node stopped the partial plan at its own limit", code="NODE_EXECUTION_FAILED")
        return original(self, sql, on_abandon, finish_by)

    with monkeypatch.context() as m:
        m.setattr(DuckDBBackend, "run", run)
        yield


def private_key_texts(state: Path) -> list[str]:
    """Every way the private keys in a node's ``state`` directory could be written out: PEM body lines, raw bytes
    in base64 and hex (what no output, log or catalog may hold)."""
    texts = []
    for path in (state / AGREEMENT_KEY, state / "audit" / AUDIT_KEY):
        pem = path.read_bytes()
        key = serialization.load_pem_private_key(pem, password=None)
        raw = key.private_bytes(  # type: ignore[union-attr]
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        texts += [line for line in pem.decode().splitlines() if not line.startswith("-----")]
        texts += [base64.b64encode(raw).decode(), raw.hex()]
    return texts


def refusal(call: Callable[[], Any]) -> FederationError:
    """The error ``call`` raises (it must raise one)."""
    with pytest.raises(FederationError) as info:
        call()
    return info.value


def raw_file_oracle(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """The oracle over one file: DuckDB over it as it is, with its own column types, as the view ``lineitem``."""
    reader = f"read_csv('{path}', header = true)" if path.suffix == ".csv" else f"read_parquet('{path}')"
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"CREATE VIEW lineitem AS SELECT * FROM {reader}")
        return con.execute(sql).fetchall()
    finally:
        con.close()


def write_table(path: Path, columns: Mapping[str, str], rows: Sequence[Sequence[Any]]) -> None:
    """Write ``rows`` as a Parquet file with the given DuckDB column types."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:")
    try:
        cols = ", ".join(f'"{c}" {t}' for c, t in columns.items())
        con.execute(f"CREATE TABLE t ({cols})")
        if rows:
            marks = ", ".join("?" for _ in columns)
            con.executemany(f"INSERT INTO t VALUES ({marks})", [tuple(r) for r in rows])
        con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    finally:
        con.close()


@contextlib.contextmanager
def federation(
    root: Path,
    tables: Mapping[str, Mapping[str, Any]],
    node_rows: Mapping[str, Mapping[str, Sequence[Sequence[Any]]]],
    *,
    deadline_ms: int = 10_000,
    min_deadline_ms: int = 1_000,
    write_data: bool = True,
    policy: Path | Mapping[str, Path] = OPEN_POLICY,
    people: Sequence[tuple[str, str, str | None]] = (("caseworker", "caseworker", None),),
    coordinator_settings: Mapping[str, Any] | None = None,
    node_settings: Mapping[str, Mapping[str, Any]] | None = None,
    published_keys: Sequence[str] = ("audit_key", "agreement_key"),
    catalog_extra: Mapping[str, Any] | None = None,
) -> Iterator[Federation]:
    """Start a federation whose nodes hold ``node_rows[node_id][table]`` for the catalog ``tables``.

    Every node applies ``policy`` (one file, or one per node id); ``people`` get certificates
    (name, role, home region) and sign with :meth:`Federation.client`. ``node_settings`` adds to a node's
    configuration, by node id (e.g. ``{"n1": {"limits": {"query_ms": 10}}}``). The catalog publishes each
    node's ``published_keys`` (made in its state directory first).
    """
    node_ids = list(node_rows)
    pki_dir = root / "pki"
    init_federation(pki_dir, node_ids, federation=FEDERATION, clients=people)
    audit_keys, agreement_keys = {}, {}
    for n in node_ids:  # each node's audit key goes into the catalog, so clients verify every receipt
        with AuditLog.open(root / "state" / n / "audit", n, fsync=False) as log:
            audit_keys[n] = log.public_key_b64()
        # and its agreement key, which lookups seal identifiers to
        agreement_keys[n] = AgreementKey.load_or_create(root / "state" / n).public_b64()
    keys = {n: {"audit_key": audit_keys[n], "agreement_key": agreement_keys[n]} for n in node_ids}
    catalog_doc = {
        "federation": FEDERATION,
        "nodes": [
            {
                "id": n,
                "address": "127.0.0.1:1",
                **({"code": BY_NODE_ID[n].code} if n in BY_NODE_ID else {}),  # a demo city has its code, as the demo's
                **{k: v for k, v in keys[n].items() if k in published_keys},
            }
            for n in node_ids
        ],
        "tables": tables,
        "issuers": [DEMO_ISSUER],  # the default policy's consent service
        **(catalog_extra or {}),  # e.g. other consent issuers
    }
    catalog_path = root / "federation.yaml"
    catalog_path.write_text(yaml.safe_dump(catalog_doc, sort_keys=False, allow_unicode=True))
    # the demo issuer's first signed revocation list, nothing revoked: a region takes no issuer's consents
    # without its list (a test naming its own lists in node_settings replaces this one)
    demo_revocations: dict[str, str] = {}
    if DEMO_ISSUER in catalog_doc["issuers"]:
        demo_list = root / "demo-consent-revocations.json"
        demo_list.write_bytes(consent_revocations.sign_list(DEMO_ISSUER_KEY, DEMO_CONSENT_ISSUER, 1, []))
        demo_revocations = {DEMO_CONSENT_ISSUER: str(demo_list)}
    catalog = load_catalog(catalog_path)
    data_files: dict[str, list[Path]] = {t: [] for t in tables}
    node_configs: dict[str, NodeConfig] = {}
    nodes: dict[str, RunningNode] = {}
    coordinator: RunningCoordinator | None = None
    try:
        for node_id in node_ids:
            sources = {}
            for table, spec in catalog.tables.items():
                path = root / "data" / node_id / f"{table}.parquet"
                if write_data:
                    types = {c: col.type for c, col in spec.columns.items()}
                    write_table(path, types, node_rows[node_id].get(table, []))
                data_files[table].append(path)
                sources[table] = {"path": str(path)}
            config = parse_model(
                root / f"{node_id}.yaml",
                {
                    "node_id": node_id,
                    "listen": "127.0.0.1:0",
                    "catalog": str(catalog_path),
                    "tables": sources,
                    "policy": str(policy if isinstance(policy, Path) else policy[node_id]),
                    "state_dir": str(root / "state" / node_id),
                    "revocations": str(pki_dir / "crl.pem"),
                    "audit_fsync": False,
                    "consent_revocations": demo_revocations,
                    **(node_settings or {}).get(node_id, {}),
                    "tls": {
                        "ca": str(pki_dir / "ca.pem"),
                        "cert": str(pki_dir / "nodes" / f"{node_id}.pem"),
                        "key": str(pki_dir / "nodes" / f"{node_id}.key"),
                    },
                },
                NodeConfig,
            )
            nodes[node_id] = start_node(config)
            node_configs[node_id] = config
        coord_config = CoordinatorConfig.model_validate(
            {
                "listen": "127.0.0.1:0",
                "catalog": str(catalog_path),
                "deadline_ms": deadline_ms,
                "min_deadline_ms": min(min_deadline_ms, deadline_ms),
                "revocations": str(pki_dir / "crl.pem"),
                **(coordinator_settings or {}),
                "tls": {
                    "ca": str(pki_dir / "ca.pem"),
                    "cert": str(pki_dir / "coordinator.pem"),
                    "key": str(pki_dir / "coordinator.key"),
                },
            }
        )
        addresses = {n: f"127.0.0.1:{r.port}" for n, r in nodes.items()}
        coordinator = start_coordinator(coord_config, addresses=addresses)
        person = "caseworker"
        profile_path = root / "client.yaml"
        profile_path.write_text(
            yaml.safe_dump(
                {
                    "coordinator": f"127.0.0.1:{coordinator.port}",
                    "catalog": str(catalog_path),
                    "keys": str(root / "keys" / "client.bfv"),
                    "tls": {
                        "ca": str(pki_dir / "ca.pem"),
                        "cert": str(pki_dir / "people" / f"{person}.pem"),
                        "key": str(pki_dir / "people" / f"{person}.key"),
                    },
                }
            )
        )
        yield Federation(
            root=root,
            catalog_path=catalog_path,
            catalog=catalog,
            profile_path=profile_path,
            nodes=nodes,
            coordinator=coordinator,
            node_ids=node_ids,
            node_configs=node_configs,
            data_files=data_files,
            coordinator_config=coord_config,
        )
    finally:
        if coordinator is not None:
            coordinator.stop(0)
        for node in nodes.values():
            node.stop(0)
