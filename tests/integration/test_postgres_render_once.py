"""A region on PostgreSQL renders a question's node query once, at admission, and runs that rendering.

The node's admission renders the plan's query for PostgreSQL (to refuse at once what cannot run exactly there);
its run takes the rendering kept with the question instead of parsing and rendering it again, for an exact
answer and for a DP answer's clamped query over its row-capped source alike. The renderer is counted by
wrapping :func:`federation.planner.dialects.render_node_sql`; the answers are checked against DuckDB over every
region's rows (the harness's oracle).
"""

from __future__ import annotations

import contextlib
import copy
import random
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import pytest
from pg import fresh_database, load_table

from hpf.federation.planner import dialects, plan_query
from hpf.federation.privacy.dp_plan import dp_plan
from hpf.node.backends.postgres_backend import PostgresBackend
from hpf.node.executor import PartialExecutor

CITIES = ["310000", "330100", "320100"]
TABLES: dict[str, Any] = {
    "deposits": {
        "columns": {
            "person_id": {"type": "VARCHAR", "class": "identifier"},
            "city_code": {"type": "VARCHAR", "class": "public", "domain": {"values": CITIES}},
            "amount_fen": {"type": "BIGINT", "class": "public", "bounds": [-1000, 100_000]},
        }
    }
}
DP_TABLES = copy.deepcopy(TABLES)
DP_TABLES["deposits"]["contribution"] = {"person": "person_id", "max_rows": 2, "max_regions": 2}
PG_COLUMNS = {"person_id": "text", "city_code": "text", "amount_fen": "bigint"}
ENV = "HPF_TEST_RENDER_ONCE_DSN"
EXACT_SQL = (
    "SELECT city_code, COUNT(*), SUM(amount_fen) FROM deposits WHERE city_code >= '320100' "
    "GROUP BY city_code ORDER BY city_code"
)
DP_SQL = "SELECT city_code, COUNT(*) AS n, SUM(amount_fen) AS total FROM deposits GROUP BY 1"


def rows(seed: int, n: int) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    return [(f"p{seed}-{i // 3}", rng.choice(CITIES), rng.randrange(-5000, 200_000)) for i in range(n)]


class Renders:
    """Every rendering for PostgreSQL (the DuckDB query in), those made while a node ran a question, and the SQL
    the PostgreSQL region ran."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rendered: list[tuple[str, str]] = []
        self.during_runs = 0
        self.ran: list[str] = []
        render, compute, run = dialects.render_node_sql, PartialExecutor.compute, PostgresBackend.run
        computing = threading.local()  # a node's run (in the thread that admitted the question), not another's

        def counted_render(sql: str, backend: str, *args: Any) -> str:
            out = render(sql, backend, *args)
            if backend == "postgres":
                self.rendered.append((sql, out))
                self.during_runs += getattr(computing, "on", False)
            return out

        def counted_compute(executor: PartialExecutor, *args: Any, **kwargs: Any) -> Any:
            computing.on = True
            try:
                return compute(executor, *args, **kwargs)
            finally:
                computing.on = False

        def recorded_run(backend: PostgresBackend, sql: str, *args: Any, **kwargs: Any) -> Any:
            self.ran.append(sql)
            return run(backend, sql, *args, **kwargs)

        monkeypatch.setattr(dialects, "render_node_sql", counted_render)
        monkeypatch.setattr(PartialExecutor, "compute", counted_compute)
        monkeypatch.setattr(PostgresBackend, "run", recorded_run)


@contextlib.contextmanager
def federation(
    monkeypatch: pytest.MonkeyPatch, tables: dict[str, Any], policy: Path = harness.OPEN_POLICY
) -> Iterator[harness.Federation]:
    node_rows = {"n0": {"deposits": rows(1, 600)}, "n1": {"deposits": rows(2, 300)}}
    with fresh_database() as dsn, tempfile.TemporaryDirectory(prefix="hpf-pg-once-") as tmp:
        load_table(dsn, "deposits", PG_COLUMNS, node_rows["n0"]["deposits"])
        monkeypatch.setenv(ENV, dsn)
        settings = {"n0": {"tables": {"deposits": {"postgres": {"dsn_env": ENV}, "table": "deposits"}}}}
        with harness.federation(Path(tmp), tables, node_rows, policy=policy, node_settings=settings) as fed:
            assert isinstance(fed.nodes["n0"].handler.admission.executor.backend, PostgresBackend)
            yield fed


def test_an_exact_question_is_rendered_once_and_runs_as_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    with federation(monkeypatch, TABLES) as fed, fed.client() as c:
        renders = Renders(monkeypatch)
        answer = c.query(EXACT_SQL)
        assert answer.missing == [] and answer.rows == [list(r) for r in fed.oracle(EXACT_SQL)]
        assert len(answer.rows) == 2
        node_sql = plan_query(EXACT_SQL, fed.catalog).node_sql()
        assert [sql for sql, _ in renders.rendered] == [node_sql]  # once, at admission
        assert renders.during_runs == 0
        assert renders.ran == [renders.rendered[0][1]]  # the region ran the admission's rendering
        assert 'COLLATE "C"' in renders.ran[0]
        renders.rendered.clear()
        assert c.query(EXACT_SQL).rows == answer.rows  # the next question is rendered again, once
        assert [sql for sql, _ in renders.rendered] == [node_sql]


def test_a_dp_question_runs_its_clamped_capped_query_as_admission_rendered_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dp_policy = harness.OPEN_POLICY.with_name("open-dp.yaml")
    with federation(monkeypatch, DP_TABLES, dp_policy) as fed, fed.client() as c:
        renders = Renders(monkeypatch)
        answer = c.query(DP_SQL)
        assert answer.missing == [] and sorted(answer.answered) == ["n0", "n1"]
        assert answer.privacy["mode"] == "dp"
        assert {row[0] for row in fed.oracle(DP_SQL)} <= {row[0] for row in answer.rows}  # every city's group
        plan = plan_query(DP_SQL, fed.catalog)
        clamped, source = dp_plan(plan, fed.catalog)
        capped_sql = clamped.node_sql(source)
        done = [sql for sql, _ in renders.rendered]
        assert sorted(done) == sorted([plan.node_sql(), capped_sql])  # each once, both at admission
        assert renders.during_runs == 0
        assert renders.ran == [dict(renders.rendered)[capped_sql]]
