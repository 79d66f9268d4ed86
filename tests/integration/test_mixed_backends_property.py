"""Property: a federation mixing regions on DuckDB (files) and on PostgreSQL answers as DuckDB over all rows.

The grammar, the seeded data and the oracle are the file-only property test's (test_federated_property.py): every
federated answer equals DuckDB over the union of every region's rows, exactly (integers and decimals to the digit
and the Python type, floats within 1e-9 relative, NULLs exactly). Here two of four regions read their rows from
PostgreSQL, each from a table of its own in the session's database (whose text collates by ICU's English rules,
so a comparison rendered without code point order would show), loaded with exactly that region's rows.

A question the PostgreSQL regions cannot run exactly may be refused (PLAN_BACKEND_UNSUPPORTED, naming the
construct), but only one a federation of the same rows on files answers right; at least 80% of the drawn
questions must be answered, so that the property is not vacuous.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import re
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import harness
import pytest
from examples import budget
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg import load_table, pg_connect
from psycopg import sql
from sibling import load_test_module

from hpf.federation.crypto import he
from hpf.federation.errors import FederationError
from hpf.federation.planner import plan_query
from hpf.federation.planner.dialects import REFUSED
from hpf.federation.privacy.dp_plan import component_label, dp_terms
from hpf.node.backends.postgres_backend import PostgresBackend

prop = load_test_module("federated_property", "integration/test_federated_property.py")

ENV = "HPF_TEST_MIXED_PG_DSN"
PG_COLUMNS = {
    "person_id": "text",
    "employer": "text",
    "city_code": "text",
    "status": "integer",
    "active": "boolean",
    "month": "date",
    "amount_fen": "bigint",
    "balance": "numeric(12,2)",
    "rate": "numeric(6,4)",
    "score": "double precision",
}
assert list(PG_COLUMNS) == list(prop.TABLES["deposits"]["columns"])
# seeds of four regions (the last one empty), and which of them read PostgreSQL: an empty table among them
SEEDS = {2: ("n0", "n2"), 5: ("n1", "n3")}
MIN_ANSWERED = 0.8
REFUSAL = re.compile(
    r"region\(s\) (?P<regions>[n0-9, ]+) could not answer this query: (?P<construct>.+) cannot run exactly on postgres"
)
# the words a refusal names its construct by (dialects.unsupported's sentences start with the construct)
CONSTRUCTS = [*REFUSED.values(), "a DOUBLE", "a cast to text", "function ", "the date part", "SUBSTRING", "SIGN"]


def on_postgres(node_rows: Any, dsn: str, regions: tuple[str, ...]) -> dict[str, Any]:
    """Load each of ``regions``' rows into a table of its own; the node settings that read it from there."""
    settings: dict[str, Any] = {}
    for node in regions:
        table = f"deposits_{node}_{uuid.uuid4().hex[:8]}"
        load_table(dsn, table, PG_COLUMNS, node_rows[node]["deposits"])
        source = {"postgres": {"dsn_env": ENV}, "schema": "public", "table": table}
        settings[node] = {"tables": {"deposits": source}}
    return settings


def drop_tables(dsn: str, tables: list[str]) -> None:
    with pg_connect(dsn) as con:
        for table in tables:
            con.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))


class Mixed:
    """A mixed federation, and, made when a question is refused, a federation of the same rows on files only."""

    def __init__(self, live: Any, node_rows: Any, keys: he.ClientKeys, stack: contextlib.ExitStack) -> None:
        self.live, self.node_rows, self.keys, self.stack = live, node_rows, keys, stack
        self.files: Any = None
        self.pg_tables: dict[str, str] = {}  # region -> its table in PostgreSQL

    def check(self, query: Any, counts: Counter[str]) -> None:
        try:
            self.live.check(query)
        except FederationError as err:
            detail = f"\nquery: {query.sql}\nrefusal: {err}"
            assert err.code == "PLAN_BACKEND_UNSUPPORTED", detail
            said = REFUSAL.fullmatch(err.message)
            assert said is not None, detail
            assert said["regions"].split(", ") == sorted(self.pg_tables), "not the regions on PostgreSQL" + detail
            construct = said["construct"]
            assert any(construct.startswith(c) for c in CONSTRUCTS), "the refusal names no construct" + detail
            if self.files is None:
                self.files = self.stack.enter_context(prop.live_federation(self.node_rows, self.keys))
            self.files.check(query)  # the same rows on files answer it, as the oracle does
            counts["refused"] += 1
            counts[construct] += 1
            return
        counts["answered"] += 1


@contextlib.contextmanager
def mixed_federation(
    node_rows: Any, regions: tuple[str, ...], dsn: str, keys: he.ClientKeys, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Mixed]:
    monkeypatch.setenv(ENV, dsn)
    with contextlib.ExitStack() as stack:
        settings = on_postgres(node_rows, dsn, regions)
        stack.callback(drop_tables, dsn, [s["tables"]["deposits"]["table"] for s in settings.values()])
        live = stack.enter_context(prop.live_federation(node_rows, keys, settings))
        for node in live.fed.node_ids:
            backend = live.fed.nodes[node].handler.admission.executor.backend
            assert isinstance(backend, PostgresBackend) == (node in regions), node
        mixed = Mixed(live, node_rows, keys, stack)
        mixed.pg_tables = {node: s["tables"]["deposits"]["table"] for node, s in settings.items()}
        yield mixed


def assert_mostly_answered(counts: Counter[str]) -> None:
    total = counts["answered"] + counts["refused"]
    constructs = {k: v for k, v in counts.items() if k not in ("answered", "refused")}
    print(f"\nanswered {counts['answered']} of {total}, refused {counts['refused']}: {constructs}")
    assert total > 0 and counts["answered"] >= MIN_ANSWERED * total, dict(counts)


@pytest.fixture(scope="module")
def client_keys() -> he.ClientKeys:
    return he.ClientKeys.generate()


@pytest.fixture(scope="module")
def module_env() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module", params=list(SEEDS), ids=[f"seed{s}" for s in SEEDS])
def seeded(
    request: pytest.FixtureRequest, pg_database: str, client_keys: he.ClientKeys, module_env: pytest.MonkeyPatch
) -> Iterator[Mixed]:
    node_rows = prop.seeded_node_rows(request.param)
    assert len(node_rows) == 4 and node_rows["n3"]["deposits"] == []
    with mixed_federation(node_rows, SEEDS[request.param], pg_database, client_keys, module_env) as mixed:
        yield mixed


def test_seeded_mixed_federation_matches_oracle(seeded: Mixed) -> None:
    counts: Counter[str] = Counter()

    @settings(max_examples=budget(50), deadline=None, suppress_health_check=list(HealthCheck))
    @given(query=prop.queries())
    def answered_as_the_oracle(query: Any) -> None:
        seeded.check(query, counts)

    answered_as_the_oracle()
    assert_mostly_answered(counts)


def test_generated_data_on_mixed_regions_matches_oracle(
    pg_database: str, client_keys: he.ClientKeys, module_env: pytest.MonkeyPatch
) -> None:
    counts: Counter[str] = Counter()
    four_regions = st.lists(st.lists(prop.ROW_STRATEGY, max_size=30), min_size=4, max_size=4)

    @settings(max_examples=budget(8), deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        regions=four_regions,
        on_pg=st.lists(st.sampled_from(["n0", "n1", "n2", "n3"]), min_size=2, max_size=3, unique=True),
        batch=st.lists(prop.queries(), min_size=3, max_size=5),
    )
    def answered_as_the_oracle(regions: list[list[Any]], on_pg: list[str], batch: list[Any]) -> None:
        node_rows = {f"n{i}": {"deposits": rows} for i, rows in enumerate(regions)}
        with mixed_federation(node_rows, tuple(sorted(on_pg)), pg_database, client_keys, module_env) as mixed:
            for query in batch:
                mixed.check(query, counts)

    answered_as_the_oracle()
    assert_mostly_answered(counts)


def test_a_refusal_is_checked_on_files_and_the_regions_read_postgres(
    pg_database: str, client_keys: he.ClientKeys, module_env: pytest.MonkeyPatch
) -> None:
    """The checks the properties rest on: a refused question is answered right by the same rows on files (and
    counted as refused), and a region on PostgreSQL answers from its table there, not from the harness's files."""
    node_rows = prop.seeded_node_rows(2)
    with mixed_federation(node_rows, ("n0", "n2"), pg_database, client_keys, module_env) as mixed:
        counts: Counter[str] = Counter()
        refused = prop.Query(
            "SELECT COUNT(*), SUM(amount_fen) FROM deposits WHERE LOWER(employer) LIKE 'acme%'",
            True,
            "SELECT COUNT(*), SUM(amount_fen) FROM deposits WHERE LOWER(employer) LIKE 'acme%'",
        )
        mixed.check(refused, counts)
        assert counts["refused"] == 1 and counts["answered"] == 0 and mixed.files is not None
        assert [m for m in counts if m.startswith("LOWER")], dict(counts)
        count = "SELECT COUNT(*) FROM deposits"
        mixed.check(prop.Query(count, True, count), counts)
        assert counts["answered"] == 1
        table = mixed.pg_tables["n0"]
        with pg_connect(pg_database) as con:
            con.execute(f"INSERT INTO \"{table}\" (person_id) VALUES ('extra')")
        ((total,),) = mixed.live.fed.oracle(count)
        assert mixed.live.client.query(count).rows == [[total + 1]]


# ------------------------------------------------------------------------------ differential privacy

DP_POLICY = harness.OPEN_POLICY.with_name("open-dp.yaml")  # the caseworker's answers: epsilon 1, threshold 0
DP_TABLES = copy.deepcopy(prop.TABLES)
DP_TABLES["deposits"]["contribution"] = {"person": "person_id", "max_rows": 2, "max_regions": 2, "prefer": "month"}
DP_TABLES["deposits"]["columns"]["amount_fen"]["bounds"] = [-1000, 100_000]
DP_SQL = "SELECT city_code, COUNT(*) AS n, COUNT(amount_fen) AS m, SUM(amount_fen) AS total FROM deposits GROUP BY 1"
HEAVY = 10**12  # far above the bound: clamped to 100000


def dp_rows(node: int) -> list[tuple[Any, ...]]:
    """90 rows: 30 people with 3 rows each (the cap keeps 2, the latest month first, a NULL month among them,
    ties on the month broken by the other columns), amounts in and out of the bounds, NULLs."""
    rows = []
    for i in range(90):
        person, j = f"q{node}-{i // 3:02d}", i % 3
        month = None if (i + node) % 7 == 0 else dt.date(2016 + (i % 5), 1 + j * (i % 2), 1)
        amount = HEAVY if i % 11 == 0 else (None if i % 13 == 0 else (-5000 if i % 17 == 0 else 37 * i - 500))
        city = prop.CITIES[(i + node) % 3] if i % 10 else None
        balance = Decimal(i * 101 - 3000).scaleb(-2)
        rows.append((person, prop.EMPLOYERS[i % 6], city, 1 + i % 4, i % 2 == 0, month, amount, balance, None, 0.5))
    return rows


def test_a_dp_answer_over_mixed_regions_is_within_its_stated_noise_of_the_clamped_rows(
    pg_database: str, client_keys: he.ClientKeys, module_env: pytest.MonkeyPatch
) -> None:
    node_rows = {f"n{i}": {"deposits": dp_rows(i)} for i in range(4)}
    module_env.setenv(ENV, pg_database)
    settings = on_postgres(node_rows, pg_database, ("n1", "n2"))
    with (
        tempfile.TemporaryDirectory(prefix="hpf-prop-dp-") as tmp,
        harness.federation(Path(tmp), DP_TABLES, node_rows, policy=DP_POLICY, node_settings=settings) as fed,
        fed.client(keys=client_keys) as c,
    ):
        answer = c.query(DP_SQL)
        terms = dp_terms(plan_query(DP_SQL, fed.catalog), fed.catalog, 1.0, 1e-6, 0)
        plan = plan_query(DP_SQL, fed.catalog)
        clamped = {key: values for key, *values in fed.clamped_oracle(DP_SQL)}
        plain = {key: values for key, *values in fed.oracle(DP_SQL)}
    assert answer.missing == [] and sorted(answer.answered) == ["n0", "n1", "n2", "n3"]
    assert answer.privacy["mode"] == "dp" and answer.privacy["verified"]
    stated = {n["component"]: n["sd"] for n in answer.privacy["noise"]}
    pairs = zip(plan.components, terms.components, strict=True)
    sds = {component_label(comp): t.sd / 10**comp.scale for comp, t in pairs}
    assert stated == pytest.approx({k: sd for k, sd in sds.items() if k in stated})
    assert {"COUNT(*)", "COUNT(amount_fen)", "SUM(amount_fen)"} <= set(stated)
    got = {key: values for key, *values in answer.rows}
    assert set(clamped) <= set(got) and len(got) == len(answer.rows)
    for key, (n, m, total) in clamped.items():
        got_n, got_m, got_total = got[key]
        detail = f"cell {key}: answer {got[key]}, clamped {clamped[key]}, plain {plain[key]}, sds {stated}"
        assert abs(got_n - n) < 6 * stated["COUNT(*)"] and abs(got_m - m) < 6 * stated["COUNT(amount_fen)"], detail
        assert total is not None and (got_total is not None or got_m <= 0), detail  # NULL where no rows show
        assert got_total is None or abs(got_total - total) < 6 * stated["SUM(amount_fen)"], detail
    # the clamping binds: the heavy amounts would be a thousand SDs away
    assert any(
        got[k][2] is not None and abs(got[k][2] - plain[k][2]) > 1000 * stated["SUM(amount_fen)"] for k in clamped
    )
