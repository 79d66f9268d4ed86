"""Person lookups and screening over a federation whose regions hold their tables in PostgreSQL, Spark or files.

Two of four synthetic regions load their tables into PostgreSQL (a schema each, in a database of the test's own);
one reads its Parquet files through Spark (local mode, the session the tests share); the last reads them with
DuckDB. The oracle is DuckDB over the union of every region's Parquet files, the
same rows the databases were loaded from, counted per city (test_lookup's :func:`oracle_facts`, which does not
share the node's facts query). Identifiers a database holds with spaces around them or a lower-case x are found
as DuckDB finds them. A database's rows change unseen: the facts in force stay until the schedule or
``hpf node refresh`` computes them again, then the lookup follows the new rows.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import harness
import pytest
import yaml
from pg import fresh_database, pg_connect
from psycopg import sql
from sibling import load_test_module

from hpf.demo.synth import generate_node, planted_duplicate_loans
from hpf.federation.crypto import he
from hpf.federation.crypto.lookup_codec import PersonFacts
from hpf.federation.errors import UnavailableError
from hpf.federation.hpf_schema import hpf_tables
from hpf.federation.regions import BY_NODE_ID
from hpf.node.backends import postgres_backend
from hpf.node.backends.postgres_backend import PostgresBackend
from hpf.node.backends.spark_backend import SparkBackend
from hpf.node.lookup_refresh import ask_refresh
from hpf.policies import DEFAULT_POLICY

lk = load_test_module("lookup_oracle", "integration/test_lookup.py")
REVIEW, absent_ids, assert_complete, oracle_facts, people_where = (
    lk.REVIEW,
    lk.absent_ids,
    lk.assert_complete,
    lk.oracle_facts,
    lk.people_where,
)
NODES = ["shanghai", "hangzhou", "nanjing", "suzhou"]
ON_PG = ("hangzhou", "suzhou")
ON_SPARK = ("nanjing",)
SEED, ROWS = 11, 8_000
PEOPLE = (("checker", "caseworker", "hangzhou"), ("bank", "integrator", "suzhou"))
PG_CITIES = tuple(BY_NODE_ID[n].code for n in ON_PG)
SPARK_CITY = BY_NODE_ID[ON_SPARK[0]].code
ENV = "HPF_TEST_LOOKUP_DSN"
PG_TYPES = {"VARCHAR": "text", "BIGINT": "bigint", "INTEGER": "integer", "DATE": "date"}
# Unicode's space separators, which DuckDB's trim() removes (and PostgreSQL's btrim() only when told)
SPACES = ("\u3000", "\u00a0", "\u2009", " ")


def _load_region(dsn: str, root: Path, node: str) -> dict[str, Any]:
    """Every table of ``node``'s Parquet files into the schema ``node``; the node's ``tables:`` naming them."""
    tables: dict[str, Any] = {}
    con = duckdb.connect()
    with pg_connect(dsn) as pg:
        pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(node)))
        for table, spec in hpf_tables().items():
            columns = {c: PG_TYPES[col["type"]] for c, col in spec["columns"].items()}
            rows = con.execute(
                f"SELECT {', '.join(columns)} FROM read_parquet('{root / 'data' / node / f'{table}.parquet'}')"
            ).fetchall()
            cols = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in columns.items()
            )
            name = sql.Identifier(node, table)
            pg.execute(sql.SQL("CREATE TABLE {} ({})").format(name, cols))
            with pg.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(name)) as copy:
                for row in rows:
                    copy.write_row(row)
            tables[table] = {"postgres": {"dsn_env": ENV}, "schema": node, "table": table}
    con.close()
    return tables


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with fresh_database() as found:
        yield found


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, dsn: str) -> Iterator[harness.Federation]:
    root = tmp_path_factory.mktemp("pg-lookup")
    for node in NODES:
        generate_node(root / "data", node, ROWS, SEED)
    settings: dict[str, Any] = {node: {"tables": _load_region(dsn, root, node)} for node in ON_PG}
    settings["suzhou"]["lookup_facts"] = {"refresh_s": 2}  # its facts follow the database by the schedule
    for node in ON_SPARK:
        files = {t: {"spark": {"path": str(root / "data" / node / f"{t}.parquet")}} for t in hpf_tables()}
        settings[node] = {"tables": files, "spark": {"master": "local[2]"}, "limits": {"query_ms": 9_000}}
    os.environ[ENV] = dsn
    try:
        with harness.federation(
            root,
            hpf_tables(),
            {n: {} for n in NODES},
            write_data=False,
            policy=DEFAULT_POLICY,
            people=PEOPLE,
            node_settings=settings,
        ) as f:
            for node in NODES:
                backend = f.nodes[node].handler.admission.executor.backend
                assert isinstance(backend, PostgresBackend) == (node in ON_PG), node
                assert isinstance(backend, SparkBackend) == (node in ON_SPARK), node
            yield f
    finally:
        del os.environ[ENV]


@pytest.fixture(scope="module")
def keys() -> he.ClientKeys:
    return he.ClientKeys.generate()


def test_lookups_over_regions_on_postgres_equal_the_oracle(fed: harness.Federation, keys: he.ClientKeys) -> None:
    everyone = people_where(
        fed, "SELECT person_id FROM accounts UNION SELECT person_id FROM deposits UNION SELECT person_id FROM loans"
    )
    multi = people_where(fed, "SELECT person_id FROM accounts GROUP BY 1 HAVING COUNT(DISTINCT city_code) >= 2")
    planted = [p.person_id for p in planted_duplicate_loans(SEED, ROWS, NODES)]
    rng = random.Random(5)
    sample = list(dict.fromkeys([*planted, *rng.sample(multi, 10), *rng.sample(everyone, 10), *absent_ids(3)]))
    expected = oracle_facts(fed.oracle, sample)
    # people known to a region on PostgreSQL, and several to both kinds of region
    on_pg = set(people_where(fed, f"SELECT person_id FROM accounts WHERE city_code IN {PG_CITIES}"))
    on_spark = set(people_where(fed, f"SELECT person_id FROM accounts WHERE city_code = '{SPARK_CITY}'"))
    assert (
        len(on_pg & set(sample)) >= 10
        and len(on_spark & set(sample)) >= 3
        and sum(expected[p].cities >= 2 for p in sample) >= 8
    )
    with fed.client(keys=keys, person="checker") as client:
        for pid in sample:
            answer = client.lookup([pid], **REVIEW)
            assert_complete(answer, NODES)
            assert answer.facts == [expected[pid]], pid


def test_screening_over_regions_on_postgres_finds_the_planted_loans(
    fed: harness.Federation, keys: he.ClientKeys
) -> None:
    ids = [*people_where(fed, "SELECT person_id FROM accounts"), *absent_ids(20)]
    random.Random(3).shuffle(ids)
    with fed.client(keys=keys, person="bank") as bank:
        answer = bank.screen(ids, batch=400, parallel=2, tokens=fed.consent_tokens(ids), **REVIEW)
    assert answer.answered == sorted(NODES) and answer.missing == []
    found = {pid for pid, f in zip(ids, answer.facts, strict=True) if f.duplicate_loans}
    open_in_two = people_where(
        fed,
        "SELECT person_id FROM loans WHERE status IN ('active', 'overdue') GROUP BY 1 "
        "HAVING COUNT(DISTINCT city_code) >= 2",
    )
    pg_loans = people_where(
        fed, f"SELECT person_id FROM loans WHERE status IN ('active', 'overdue') AND city_code IN {PG_CITIES}"
    )
    assert len(open_in_two) >= 2 and set(open_in_two) & set(pg_loans)  # some held in a region on PostgreSQL
    assert found == set(open_in_two) == {p.person_id for p in planted_duplicate_loans(SEED, ROWS, NODES)}
    expected = {pid: f.only(answer.facts_asked) for pid, f in oracle_facts(fed.oracle, ids).items()}
    assert [pid for pid, f in zip(ids, answer.facts, strict=True) if f != expected[pid]] == []


def test_facts_read_in_many_batches_are_the_same_facts(
    fed: harness.Federation, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The facts come from the database a batch at a time: in batches of 37 people they are still exact."""
    monkeypatch.setattr(postgres_backend, "FACTS_BATCH", 37)
    outcome = ask_refresh(fed.root / "state" / "hangzhou", 60.0, lambda _msg: None)
    assert outcome.ok and outcome.people > 3 * 37, outcome
    in_hangzhou = people_where(fed, f"SELECT person_id FROM accounts WHERE city_code = '{BY_NODE_ID['hangzhou'].code}'")
    sample = random.Random(9).sample(in_hangzhou, 12)
    expected = oracle_facts(fed.oracle, sample)
    with fed.client(keys=keys, person="checker") as client:
        for pid in sample:
            assert client.lookup([pid], **REVIEW).facts == [expected[pid]], pid


def _add_loan(dsn: str, node: str, person_id: str, outstanding: int) -> None:
    with pg_connect(dsn) as pg:
        pg.execute(
            sql.SQL(
                "INSERT INTO {} (loan_id, person_id, city_code, start_date, principal_fen, outstanding_fen, "
                "term_months, status) VALUES (%s, %s, %s, DATE '2026-11-01', %s, %s, 360, 'active')"
            ).format(sql.Identifier(node, "loans")),
            (
                f"L-TEST-{random.randrange(10**9)}",
                person_id,
                BY_NODE_ID[node].code,
                outstanding,
                outstanding,
            ),
        )


def _facts(fed: harness.Federation, keys: he.ClientKeys, pid: str) -> PersonFacts:
    with fed.client(keys=keys, person="checker") as client:
        answer = client.lookup([pid], **REVIEW)
    assert_complete(answer, NODES)
    return answer.facts[0]


def test_identifiers_in_the_database_are_trimmed_and_upper_cased_as_duckdb_does(
    fed: harness.Federation, keys: he.ClientKeys, dsn: str
) -> None:
    """Loans stored under ``　<id with x>\u00a0`` and the like count for the person, as DuckDB over the same rows
    counts them (checked here on DuckDB itself), once the node computes its facts again."""
    pid = next(p for p in absent_ids(200, offset=500) if p.endswith("X"))
    stored = [f"{SPACES[0]}{pid[:17]}x{SPACES[1]}", f"{SPACES[2]}{pid}{SPACES[3]}", f"{pid[:17]}x"]
    con = duckdb.connect()
    assert {con.execute("SELECT upper(trim(?))", [s]).fetchone()[0] for s in stored} == {pid}
    before = _facts(fed, keys, pid)
    assert before.active_loans == 0
    for i, s in enumerate(stored):
        _add_loan(dsn, "hangzhou", s, 1_000 + i)
    state = fed.root / "state" / "hangzhou"
    outcome = ask_refresh(state, 60.0, lambda _msg: None)
    assert outcome.ok and outcome.people > 0, outcome
    after = _facts(fed, keys, pid)
    assert (after.active_loans, after.outstanding_fen, after.loan_cities) == (3, 3_003, 1)


def test_hpf_node_refresh_makes_a_lookup_follow_the_database(
    fed: harness.Federation, keys: he.ClientKeys, dsn: str
) -> None:
    """hangzhou computes its facts every 900 s (the default): a new loan is not seen until `hpf node refresh`."""
    pid = absent_ids(1, offset=600)[0]
    _add_loan(dsn, "hangzhou", pid, 77_000)
    assert _facts(fed, keys, pid).active_loans == 0  # the facts in force are older than the loan
    config = fed.root / "hangzhou-node.yaml"
    config.write_text(yaml.safe_dump(fed.node_configs["hangzhou"].model_dump(mode="json", by_alias=True)))
    done = subprocess.run(
        [sys.executable, "-m", "hpf.cli", "node", "refresh", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HPF_TEST_LOOKUP_DSN": "host=unused"},  # the command reads no database
    )
    assert done.returncode == 0, done.stderr
    assert "lookup facts computed for" in done.stdout and "the node took the request" in done.stderr
    assert pid not in done.stdout + done.stderr
    facts = _facts(fed, keys, pid)
    assert (facts.active_loans, facts.outstanding_fen) == (1, 77_000)


def test_the_schedule_makes_a_lookup_follow_the_database(
    fed: harness.Federation, keys: he.ClientKeys, dsn: str
) -> None:
    """suzhou computes its facts every 2 s: a new loan is seen within a few seconds, without being asked."""
    pid = absent_ids(1, offset=700)[0]
    _add_loan(dsn, "suzhou", pid, 55_000)
    deadline = time.monotonic() + 30
    while _facts(fed, keys, pid).active_loans == 0:
        assert time.monotonic() < deadline, "the schedule did not compute suzhou's facts again within 30 s"
        time.sleep(0.5)
    assert _facts(fed, keys, pid).outstanding_fen == 55_000


def test_hpf_node_refresh_computes_a_spark_regions_facts_again(fed: harness.Federation) -> None:
    """The region on Spark computes its facts again on request, as the regions on PostgreSQL do."""
    outcome = ask_refresh(fed.root / "state" / ON_SPARK[0], 120.0, lambda _msg: None)
    where = f"WHERE city_code = '{SPARK_CITY}'"
    people = people_where(
        fed,
        f"SELECT person_id FROM accounts {where} UNION SELECT person_id FROM deposits {where} "
        f"UNION SELECT person_id FROM loans {where}",
    )
    assert outcome.ok and outcome.people == len(people), outcome


def test_a_refresh_of_a_node_that_is_not_running_is_refused_at_once(tmp_path: Path) -> None:
    (tmp_path / "lookup-facts").mkdir()
    began = time.monotonic()
    with pytest.raises(UnavailableError) as info:
        ask_refresh(tmp_path, 60.0, lambda _msg: None)
    assert info.value.code == "NODE_NOT_RUNNING"
    assert time.monotonic() - began < 20
    assert list((tmp_path / "lookup-facts").iterdir()) == []  # the request is taken back
    with pytest.raises(Exception) as never_served:
        ask_refresh(tmp_path / "elsewhere", 60.0, lambda _msg: None)
    assert getattr(never_served.value, "code", None) == "NODE_NOT_RUNNING"
