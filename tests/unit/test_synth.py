"""The synthetic federation: deterministic, exact in size, on schema, plausible, and honest about its plants.

The oracle is DuckDB over the generated Parquet files, as for every federated answer. In the SQL below,
``{accounts}``, ``{deposits}``, ``{withdrawals}`` and ``{loans}`` stand for the union of a run's files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from hpf.demo.synth import (
    MIN_ROWS,
    FederationReport,
    generate_federation,
    generate_node,
    planted_duplicate_loans,
)
from hpf.federation.hpf_schema import (
    ACCOUNT_STATUSES,
    LOAN_STATUSES,
    TABLE_NAMES,
    TERM_MONTHS,
    WITHDRAWAL_REASONS,
    column_types,
)
from hpf.federation.person_id import is_valid_person_id
from hpf.federation.regions import BY_NODE_ID, REGIONS

SEED = 20240611
ROWS = 20_000
ALL = [r.node_id for r in REGIONS]
FIRST4 = ALL[:4]

PLANTED_SQL = """
    SELECT person_id, list(DISTINCT city_code ORDER BY city_code) FROM {loans} WHERE status = 'active'
    GROUP BY person_id HAVING count(DISTINCT city_code) >= 2
"""


def _globs(root: Path) -> dict[str, str]:
    return {table: f"'{root}/*/{table}.parquet'" for table in TABLE_NAMES}


@dataclass(frozen=True)
class Run:
    root: Path
    report: FederationReport
    messages: list[str]

    def file(self, node_id: str, table: str) -> Path:
        return self.root / node_id / f"{table}.parquet"

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return duckdb.connect().sql(sql.format(**_globs(self.root))).fetchall()

    def one(self, sql: str) -> Any:
        (row,) = self.rows(sql)
        return row[0]


def _run(root: Path, node_ids: list[str], rows: int = ROWS) -> Run:
    messages: list[str] = []
    return Run(root, generate_federation(root, node_ids, rows, SEED, progress=messages.append), messages)


@pytest.fixture(scope="module")
def everyone(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(tmp_path_factory.mktemp("all41"), ALL)


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(tmp_path_factory.mktemp("first4"), FIRST4)


def test_every_node_has_exactly_rows_deposit_rows(everyone: Run) -> None:
    counts = dict(everyone.rows("SELECT city_code, count(*) FROM {deposits} GROUP BY 1"))
    assert counts == {r.code: ROWS for r in REGIONS}
    for node in everyone.report.nodes:
        assert node.rows["deposits"] == ROWS
        accounts = everyone.file(node.node_id, "accounts")
        assert node.rows["accounts"] == everyone.one(f"SELECT count(*) FROM '{accounts}'")
    assert len(everyone.messages) == len(ALL)


def test_a_node_does_not_depend_on_the_other_nodes_generated(everyone: Run, four: Run, tmp_path: Path) -> None:
    for node_id in FIRST4:
        for table in TABLE_NAMES:
            assert four.file(node_id, table).read_bytes() == everyone.file(node_id, table).read_bytes()
    alone = generate_node(tmp_path, "wuxi", ROWS, SEED)  # one node, from the middle of the order
    assert alone.directory == tmp_path / "wuxi"
    for table in TABLE_NAMES:
        written = (tmp_path / "wuxi" / f"{table}.parquet").read_bytes()
        assert written == everyone.file("wuxi", table).read_bytes()


def test_another_seed_gives_other_data(everyone: Run, tmp_path: Path) -> None:
    generate_node(tmp_path, "shanghai", ROWS, SEED + 1)
    same = everyone.one(f"""SELECT count(*) FROM (SELECT * FROM '{tmp_path}/shanghai/deposits.parquet'
                            INTERSECT SELECT * FROM '{everyone.file("shanghai", "deposits")}')""")
    assert same < ROWS // 10


def test_files_have_the_catalog_schema(four: Run) -> None:
    for node_id in FIRST4:
        for table in TABLE_NAMES:
            described = four.rows(f"DESCRIBE SELECT * FROM '{four.file(node_id, table)}'")
            assert [(row[0], row[1]) for row in described] == list(column_types(table).items())


def test_city_code_is_the_nodes_code(everyone: Run) -> None:
    node_dir = " ".join(f"WHEN '{r.code}' THEN '{r.node_id}'" for r in REGIONS)
    for table, files in _globs(everyone.root).items():
        wrong = everyone.one(f"""SELECT count(*) FROM read_parquet({files}, filename = true)
                                 WHERE NOT filename LIKE '%/' || CASE city_code {node_dir} END || '/%'""")
        assert wrong == 0, table


def test_person_ids_are_valid_and_describe_one_person(everyone: Run) -> None:
    ids = [pid for (pid,) in everyone.rows("SELECT DISTINCT person_id FROM {accounts}")]
    assert all(is_valid_person_id(pid) for pid in ids)
    for table in ("deposits", "withdrawals", "loans"):  # every row belongs to an account in that node
        orphans = everyone.one(f"SELECT count(*) FROM {{{table}}} ANTI JOIN {{accounts}} USING (person_id, city_code)")
        assert orphans == 0, table
    assert everyone.one("SELECT count(*) - count(DISTINCT (person_id, city_code)) FROM {accounts}") == 0
    mismatched = everyone.one("""
        SELECT count(*) FROM {accounts} WHERE birth_year <> CAST(person_id[7:10] AS INTEGER)
        OR gender <> CASE WHEN CAST(person_id[17] AS INTEGER) % 2 = 1 THEN 'M' ELSE 'F' END""")
    assert mismatched == 0
    inconsistent = everyone.one("""
        SELECT count(*) FROM (SELECT person_id FROM {accounts} GROUP BY person_id
                              HAVING count(DISTINCT (gender, birth_year)) > 1)""")
    assert inconsistent == 0


def test_about_eight_percent_hold_accounts_in_several_cities(everyone: Run) -> None:
    share = everyone.one("""SELECT avg(CASE WHEN cities >= 2 THEN 1.0 ELSE 0.0 END)
                            FROM (SELECT count(*) AS cities FROM {accounts} GROUP BY person_id)""")
    assert 0.065 <= share <= 0.095
    contribute_here_borrow_there = everyone.one("""
        SELECT count(DISTINCT a.person_id) FROM {accounts} a JOIN {loans} l
        ON a.person_id = l.person_id AND a.city_code <> l.city_code
        WHERE a.status = 'active' AND l.status IN ('active', 'overdue')""")
    assert contribute_here_borrow_there >= 10


@pytest.mark.parametrize(("which", "at_least"), [("everyone", 20), ("four", 1)])
def test_planted_duplicate_loans_are_exactly_what_duckdb_finds(
    which: str, at_least: int, request: pytest.FixtureRequest
) -> None:
    run: Run = request.getfixturevalue(which)
    found = {pid: tuple(codes) for pid, codes in run.rows(PLANTED_SQL)}
    reported = {d.person_id: tuple(sorted(BY_NODE_ID[n].code for n in d.node_ids)) for d in run.report.planted}
    assert found == reported
    assert len(found) >= at_least
    node_ids = [n.node_id for n in run.report.nodes]
    assert planted_duplicate_loans(SEED, ROWS, node_ids) == list(run.report.planted)


def test_balances_are_deposits_minus_withdrawals(everyone: Run) -> None:
    wrong = everyone.one("""
        WITH d AS (SELECT person_id, city_code, sum(amount_fen) AS s FROM {deposits} GROUP BY ALL),
             w AS (SELECT person_id, city_code, sum(amount_fen) AS s FROM {withdrawals} GROUP BY ALL)
        SELECT count(*) FROM {accounts} a JOIN d USING (person_id, city_code)
        LEFT JOIN w USING (person_id, city_code)
        WHERE a.balance_fen <> d.s - coalesce(w.s, 0) OR a.balance_fen < 0
           OR (a.status = 'closed' AND a.balance_fen <> 0)""")
    assert wrong == 0


def test_amounts_and_histories_are_plausible(everyone: Run) -> None:
    [(median, p99, day)] = everyone.rows(
        "SELECT median(amount_fen), quantile_disc(amount_fen, 0.99), max(day(month)) FROM {deposits}"
    )
    assert 50_000 <= median <= 500_000 and p99 > 2 * median  # a few thousand yuan, with a long tail
    assert day == 1
    [(shortest, longest)] = everyone.rows(
        "SELECT min(n), max(n) FROM (SELECT count(*) AS n FROM {deposits} GROUP BY person_id, city_code)"
    )
    assert shortest <= 3 and longest >= 240  # months to decades
    people = dict(everyone.rows("SELECT city_code, count(*) FROM {accounts} GROUP BY 1"))
    assert people["310000"] > 2 * people["341700"]  # Shanghai has more contributors than Chizhou
    bad_loans = everyone.one("""SELECT count(*) FROM {loans} WHERE outstanding_fen > principal_fen
                                OR (status = 'settled') <> (outstanding_fen = 0) OR principal_fen <= 0""")
    assert bad_loans == 0
    assert everyone.one("SELECT count(*) - count(DISTINCT loan_id) FROM {loans}") == 0
    assert everyone.one("SELECT min(amount_fen) FROM {withdrawals}") > 0
    assert everyone.one("SELECT count(DISTINCT employer_id) FROM {deposits}") > 100


@pytest.mark.parametrize(
    ("table", "column", "allowed"),
    [
        ("accounts", "status", ACCOUNT_STATUSES),
        ("loans", "status", LOAN_STATUSES),
        ("withdrawals", "reason", WITHDRAWAL_REASONS),
        ("loans", "term_months", TERM_MONTHS),
    ],
)
def test_categories_fill_their_domains(everyone: Run, table: str, column: str, allowed: tuple[Any, ...]) -> None:
    seen = {value for (value,) in everyone.rows(f"SELECT DISTINCT {column} FROM {{{table}}}")}
    assert seen == set(allowed)


@pytest.mark.parametrize(
    ("table", "column"),
    [("deposits", "month"), ("withdrawals", "date"), ("accounts", "open_date"), ("loans", "start_date")],
)
def test_dates_lie_in_their_domain(everyone: Run, table: str, column: str) -> None:
    [(low, high)] = everyone.rows(f"SELECT min({column}), max({column}) FROM {{{table}}}")
    assert str(low) >= "1990-01-01" and str(high) <= "2026-12-31"


def test_progress_messages_carry_no_identifiers(everyone: Run) -> None:
    ids = {pid for (pid,) in everyone.rows("SELECT DISTINCT person_id FROM {accounts}")}
    assert not any(pid in message for pid in ids for message in everyone.messages[:3])
    assert everyone.messages[0].startswith("shanghai: 20,000 deposit rows")


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown node id"):
        generate_node(tmp_path, "atlantis", ROWS, SEED)
    with pytest.raises(ValueError, match=f"at least {MIN_ROWS}"):
        generate_node(tmp_path, "shanghai", MIN_ROWS - 1, SEED)
    with pytest.raises(ValueError, match="non-negative"):
        generate_node(tmp_path, "shanghai", ROWS, -1)
    with pytest.raises(ValueError, match="listed twice"):
        generate_federation(tmp_path, ["hefei", "hefei"], ROWS, SEED)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("rows", [MIN_ROWS, 1_000])
def test_tiny_federations_are_exact_too(rows: int, tmp_path: Path) -> None:
    run = _run(tmp_path, ALL[:6], rows)
    assert run.rows("SELECT DISTINCT count(*) FROM {deposits} GROUP BY city_code") == [(rows,)]
    assert {pid for (pid, _) in run.rows(PLANTED_SQL)} == {d.person_id for d in run.report.planted}
