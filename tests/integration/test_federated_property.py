"""Property tests: every federated answer equals DuckDB over the union of the nodes' files (the oracle).

Two sources of data:

- ``SEEDS`` federations, each built once per seed from a seeded generator (2 to 4 nodes, 0 to 40 rows per
  node, empty nodes, NULLs, negative and ~1e15 amounts, DECIMAL(12,2) balances, dates over ten years);
  hypothesis then draws many queries from a small SQL grammar against each of them;
- a hypothesis test that draws the data too and starts a fresh federation per example (fewer examples,
  but hypothesis can shrink the data of a failure).

Group values stay inside their declared domains or are NULL, so no "(other)" group appears and the oracle
needs no rewriting. Integers and decimals must match exactly (same Python type, same digits), floats
within 1e-9 relative, NULLs exactly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import random
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import harness
import pytest
import yaml
from examples import budget
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpf.client.federation_client import FederationClient
from hpf.client.profile import ClientProfile
from hpf.federation.config_files import parse_model
from hpf.federation.crypto import he

# --------------------------------------------------------------------------------------------- catalog

CITIES = ("310000", "330100", "320100")
FIRST_DAY, LAST_DAY = dt.date(2015, 1, 1), dt.date(2024, 12, 31)
EMPLOYERS = ("Acme Co", "Bohai Steel", "Changan Bank", "东方 Textiles", "O'Brien Ltd", "acme logistics")

TABLES: dict[str, Any] = {
    "deposits": {
        "columns": {
            "person_id": {"type": "VARCHAR", "class": "identifier"},
            "employer": {"type": "VARCHAR", "class": "public"},
            "city_code": {"type": "VARCHAR", "class": "public", "domain": {"values": list(CITIES)}},
            "status": {"type": "INTEGER", "class": "public", "domain": {"range": [1, 4]}},
            "active": {"type": "BOOLEAN", "class": "public", "domain": {"values": [True, False]}},
            "month": {
                "type": "DATE",
                "class": "public",
                "domain": {"range": [FIRST_DAY.isoformat(), LAST_DAY.isoformat()]},
            },
            "amount_fen": {"type": "BIGINT", "class": "public"},
            "balance": {"type": "DECIMAL(12,2)", "class": "public"},
            "rate": {"type": "DECIMAL(6,4)", "class": "public"},
            "score": {"type": "DOUBLE", "class": "public"},
        }
    }
}

Row = tuple[Any, ...]  # person_id, employer, city_code, status, active, month, amount_fen, balance, rate, score
NodeRows = dict[str, dict[str, list[Row]]]

# ------------------------------------------------------------------------------------------- data: seeded


def _maybe_null(rng: random.Random, value: Any, p_null: float = 0.15) -> Any:
    return None if rng.random() < p_null else value


def _seeded_amount(rng: random.Random) -> int:
    if rng.random() < 0.15:
        return rng.randint(-(10**15), 10**15)
    return rng.randint(-100_000, 100_000)


def seeded_row(rng: random.Random, person: str) -> Row:
    day = FIRST_DAY + dt.timedelta(days=rng.randint(0, (LAST_DAY - FIRST_DAY).days))
    balance_cents = rng.randint(-(10**11), 10**11) if rng.random() < 0.2 else rng.randint(-(10**6), 10**8)
    return (
        person,
        _maybe_null(rng, rng.choice(EMPLOYERS)),
        _maybe_null(rng, rng.choice(CITIES)),
        _maybe_null(rng, rng.randint(1, 4)),
        _maybe_null(rng, rng.random() < 0.5),
        _maybe_null(rng, day),
        _maybe_null(rng, _seeded_amount(rng)),
        _maybe_null(rng, Decimal(balance_cents).scaleb(-2)),
        _maybe_null(rng, Decimal(rng.randint(-9999, 9999)).scaleb(-4)),
        _maybe_null(rng, round(rng.uniform(-1, 1), 6)),
    )


def seeded_node_rows(seed: int) -> NodeRows:
    """2 to 4 nodes of 0 to 40 rows; every seed but the first has one empty node."""
    rng = random.Random(seed)
    n_nodes = 2 + seed % 3
    out: NodeRows = {}
    for i in range(n_nodes):
        count = 0 if (seed and i == n_nodes - 1) else rng.randint(1, 40)
        out[f"n{i}"] = {"deposits": [seeded_row(rng, f"p{seed}-{i}-{j}") for j in range(count)]}
    return out


# ---------------------------------------------------------------------------------------- data: hypothesis


def _nullable(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


ROW_STRATEGY = st.tuples(
    st.from_regex(r"p[0-9]{1,4}", fullmatch=True),
    _nullable(st.sampled_from(EMPLOYERS)),
    _nullable(st.sampled_from(CITIES)),
    _nullable(st.integers(1, 4)),
    _nullable(st.booleans()),
    _nullable(st.dates(FIRST_DAY, LAST_DAY)),
    _nullable(st.one_of(st.integers(-1000, 1000), st.integers(-(10**15), 10**15))),
    _nullable(st.integers(-(10**12) + 1, 10**12 - 1).map(lambda c: Decimal(c).scaleb(-2))),
    _nullable(st.integers(-999_999, 999_999).map(lambda c: Decimal(c).scaleb(-4))),
    _nullable(st.floats(-1e6, 1e6, allow_nan=False)),
)

NODE_ROWS_STRATEGY: st.SearchStrategy[NodeRows] = st.lists(
    st.lists(ROW_STRATEGY, max_size=40), min_size=2, max_size=4
).map(lambda nodes: {f"n{i}": {"deposits": rows} for i, rows in enumerate(nodes)})

# ----------------------------------------------------------------------------------------- query grammar


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@st.composite
def conditions(draw: st.DrawFn, depth: int = 0) -> str:
    """A WHERE / FILTER / CASE condition over the table's columns."""
    atoms = [
        st.integers(-200_000, 200_000).map(lambda v: f"amount_fen > {v}"),
        st.tuples(st.integers(-50_000, 0), st.integers(0, 50_000)).map(
            lambda b: f"amount_fen BETWEEN {b[0]} AND {b[1]}"
        ),
        st.integers(-(10**6), 10**6).map(lambda v: f"balance < {Decimal(v).scaleb(-2)}"),
        st.integers(-9999, 9999).map(lambda v: f"rate >= {Decimal(v).scaleb(-4)}"),
        st.lists(st.sampled_from(CITIES), min_size=1, max_size=2, unique=True).map(
            lambda cs: f"city_code IN ({', '.join(map(_quote, cs))})"
        ),
        st.sampled_from(CITIES).map(lambda c: f"city_code = {_quote(c)}"),
        st.sampled_from(
            [
                "city_code IS NULL",
                "city_code IS NOT NULL",
                "amount_fen IS NULL",
                "active",
                "NOT active",
                "score > 0",
                "status <> 3",
                "status IN (1, 2)",
            ]
        ),
        st.sampled_from(["A%", "%co%", "%Bank", "东方%", "O''B%", "_c%"]).map(lambda p: f"employer LIKE '{p}'"),
        st.sampled_from(["%Steel%", "acme%"]).map(lambda p: f"employer NOT LIKE '{p}'"),
        st.dates(FIRST_DAY, LAST_DAY).map(lambda d: f"month >= DATE '{d.isoformat()}'"),
        st.tuples(st.dates(FIRST_DAY, LAST_DAY), st.integers(0, 1500)).map(
            lambda p: f"month BETWEEN DATE '{p[0]}' AND DATE '{p[0] + dt.timedelta(days=p[1])}'"
        ),
        st.integers(2015, 2024).map(lambda y: f"YEAR(month) = {y}"),
        st.integers(1, 12).map(lambda m: f"EXTRACT(MONTH FROM month) <= {m}"),
        st.integers(2015, 2024).map(lambda y: f"date_part('year', month) = {y}"),
        st.integers(2016, 2024).map(lambda y: f"month < MAKE_DATE({y}, 7, 1)"),
    ]
    if depth >= 2:
        return draw(st.one_of(atoms))
    kind = draw(st.sampled_from(["atom", "atom", "atom", "and", "or", "not"]))
    if kind == "atom":
        return draw(st.one_of(atoms))
    if kind == "not":
        return f"NOT ({draw(conditions(depth + 1))})"
    left, right = draw(conditions(depth + 1)), draw(conditions(depth + 1))
    return f"({left}) {kind.upper()} ({right})"


@dataclass(frozen=True)
class Output:
    """One SELECT item: its SQL, whether its value is exact (integer/decimal), and its exact-oracle SQL."""

    sql: str
    exact: bool
    oracle: str  # the same value for the exact oracle (differs only for VAR/STDDEV)


# exact row expressions an aggregate may take, with their decimal scale
EXACT_ARGS = {
    "amount_fen": 0,
    "balance": 2,
    "rate": 4,
    "status": 0,
    "amount_fen * status": 0,
    "balance * 2": 2,
    "balance - rate": 4,
    "-amount_fen": 0,
    "ABS(amount_fen)": 0,
}
WIDE_ARGS = {"amount_fen * status"}  # up to 2**94: a SUM or AVG of it is exact; a variance of it is refused
COUNT_ARGS = ["*", "amount_fen", "balance", "city_code", "employer", "month", "score"]
FLOAT_FUNCS = ["AVG", "VAR_POP", "VAR_SAMP", "STDDEV_POP", "STDDEV_SAMP", "VARIANCE", "STDDEV"]
SAMPLE_FUNCS = {"VAR_SAMP", "STDDEV_SAMP", "VARIANCE", "STDDEV"}


@st.composite
def exact_argument(draw: st.DrawFn) -> tuple[str, int]:
    choice = draw(st.sampled_from([*EXACT_ARGS, "case_flag", "case_value"]))
    if choice == "case_flag":
        return f"CASE WHEN {draw(conditions(1))} THEN 1 ELSE 0 END", 0
    if choice == "case_value":
        return f"CASE WHEN {draw(conditions(1))} THEN balance END", 2
    return choice, EXACT_ARGS[choice]


def exact_spread_sql(func: str, arg: str, scale: int, condition: str | None) -> str:
    """VAR_*/STDDEV_* computed exactly in HUGEINT over the pooled rows, rounded to DOUBLE only at the end.

    DuckDB's own VAR_POP runs in doubles; on near-equal large values it can be off by more than 1e-9
    relative, where the federation (exact integers) is right. This is the tie-breaking oracle.
    """
    x = f"(CASE WHEN {condition} THEN {arg} END)" if condition else f"({arg})"
    big = f"CAST({x} * {10**scale} AS HUGEINT)"
    n, total, squares = f"COUNT({x})", f"SUM({big})", f"SUM({big} * {big})"
    sample = func in SAMPLE_FUNCS
    denominator = f"{n} * ({n} - 1)" if sample else f"{n} * {n}"
    variance = (
        f"(CAST({n} * {squares} - {total} * {total} AS DOUBLE) / CAST({denominator} AS DOUBLE) / {10 ** (2 * scale)})"
    )
    value = f"SQRT({variance})" if func.startswith("STDDEV") else variance
    return f"(CASE WHEN {n} > {1 if sample else 0} THEN {value} END)"


@st.composite
def aggregates(draw: st.DrawFn) -> Output:
    kind = draw(st.sampled_from(["count", "sum", "float"]))
    condition = draw(conditions(1)) if draw(st.integers(0, 5)) == 0 else None
    suffix = f" FILTER (WHERE {condition})" if condition else ""
    if kind == "count":
        call = f"COUNT({draw(st.sampled_from(COUNT_ARGS))}){suffix}"
        return Output(call, True, call)
    arg, scale = draw(exact_argument())
    if kind == "sum":
        call = f"SUM({arg}){suffix}"
        return Output(call, True, call)
    func = draw(st.sampled_from(FLOAT_FUNCS))
    if func != "AVG" and arg in WIDE_ARGS:  # a variance sums squares: the planner refuses a square past 2**164
        arg, scale = "amount_fen", 0
    call = f"{func}({arg}){suffix}"
    return Output(call, False, call if func == "AVG" else exact_spread_sql(func, arg, scale, condition))


@st.composite
def outputs(draw: st.DrawFn) -> Output:
    """An aggregate, or arithmetic over aggregates (division only where both sides are exact)."""
    first = draw(aggregates())
    shape = draw(st.sampled_from(["bare", "bare", "bare", "scaled", "combined", "ratio"]))
    if shape == "scaled":
        return Output(f"{first.sql} * 2 + 1", first.exact, f"{first.oracle} * 2 + 1")
    if shape == "combined" and first.exact:
        second = draw(aggregates().filter(lambda o: o.exact))
        op = draw(st.sampled_from(["+", "-"]))
        return Output(f"{first.sql} {op} {second.sql}", True, f"{first.sql} {op} {second.sql}")
    if shape == "ratio" and first.exact:
        return Output(f"{first.sql} / NULLIF(COUNT(*), 0)", False, f"{first.sql} / NULLIF(COUNT(*), 0)")
    return first


KEYS = [
    "city_code",
    "status",
    "active",
    "EXTRACT(YEAR FROM month)",
    "YEAR(month)",
    "EXTRACT(QUARTER FROM month)",
    "CASE WHEN amount_fen > 0 THEN 'pos' WHEN amount_fen < 0 THEN 'neg' END",
    "CASE WHEN status >= 3 THEN 1 ELSE 0 END",
]

HAVINGS = [
    "COUNT(*) >= {k}",
    "COUNT(*) < {k}",
    "SUM(amount_fen) > 0",
    "COUNT(balance) <= {k}",
    "SUM(balance) IS NOT NULL",
    "SUM(status) >= {k}",
]


@dataclass(frozen=True)
class Query:
    sql: str
    ordered: bool  # the ORDER BY fixes the order of the rows completely
    exact_oracle_sql: str  # the same query with VAR/STDDEV computed exactly (see exact_spread_sql)


@dataclass(frozen=True)
class Item:
    sql: str
    alias: str | None
    exact: bool
    is_key: bool
    oracle: str


@st.composite
def queries(draw: st.DrawFn) -> Query:
    keys = draw(st.lists(st.sampled_from(KEYS), max_size=2, unique=True))
    items: list[Item] = []
    shown_keys = 0
    for i, key in enumerate(keys):
        if draw(st.integers(0, 9)) < 9:
            items.append(Item(key, f"g{i}" if draw(st.booleans()) else None, True, True, key))
            shown_keys += 1
    for i, out in enumerate(draw(st.lists(outputs(), min_size=1, max_size=4))):
        items.append(Item(out.sql, f"v{i}" if draw(st.booleans()) else None, out.exact, False, out.oracle))
    items = list(draw(st.permutations(items)))
    select = ", ".join(f"{it.sql} AS {it.alias}" if it.alias else it.sql for it in items)
    # the exact oracle names every item so GROUP BY / ORDER BY by position or alias read the same
    oracle_select = ", ".join(f"{it.oracle} AS {it.alias or f'_{n}'}" for n, it in enumerate(items))
    sql = f"SELECT {select} FROM deposits"
    tail = ""
    where = [draw(conditions())] if draw(st.booleans()) else []
    if draw(st.integers(0, 7)) == 0:  # an identifier may appear only as a top-level WHERE equality
        where.append(f"person_id = '{draw(st.from_regex(r'p[0-9]-[0-9]-[0-9]', fullmatch=True))}'")
    if where:
        tail += " WHERE " + " AND ".join(f"({w})" for w in where)
    if keys:
        refs = []
        for key in keys:
            item = next((it for it in items if it.is_key and it.sql == key), None)
            style = draw(st.sampled_from(["expr", "position", "alias"]))
            if item is not None and style == "position":
                refs.append(str(items.index(item) + 1))
            elif item is not None and item.alias and style == "alias":
                refs.append(item.alias)
            else:
                refs.append(key)
        tail += " GROUP BY " + ", ".join(refs)
    if draw(st.integers(0, 3)) == 0:
        havings = [
            h.format(k=draw(st.integers(0, 6)))
            for h in draw(st.lists(st.sampled_from(HAVINGS), min_size=1, max_size=2))
        ]
        tail += " HAVING " + " AND ".join(havings)
    # exact columns first, so float rounding can never reorder rows; every output appears
    order_items = [it for it in items if it.exact] + [it for it in items if not it.exact]
    terms = []
    for it in order_items:
        ref = it.alias if it.alias and draw(st.booleans()) else str(items.index(it) + 1)
        terms.append(ref + draw(st.sampled_from(["", " DESC", " NULLS FIRST", " DESC NULLS LAST"])))
    tail += " ORDER BY " + ", ".join(terms)
    ordered = shown_keys == len(keys)
    if ordered and draw(st.integers(0, 3)) == 0:
        tail += f" LIMIT {draw(st.integers(0, 5))}"
        if draw(st.booleans()):
            tail += f" OFFSET {draw(st.integers(0, 3))}"
    return Query(sql + tail, ordered, f"SELECT {oracle_select} FROM deposits{tail}")


# ------------------------------------------------------------------------------------------- comparison


def same_value(got: Any, want: Any) -> bool:
    """Exact for integers, decimals, strings, dates, booleans; 1e-9 relative for floats; NULL only for NULL."""
    if got is None or want is None:
        return got is None and want is None
    if isinstance(want, float):
        return isinstance(got, float) and math.isclose(got, want, rel_tol=1e-9, abs_tol=0.0)
    if isinstance(want, Decimal):
        return isinstance(got, Decimal) and str(got) == str(want)
    return type(got) is type(want) and got == want


def same_row(got: Sequence[Any], want: Sequence[Any]) -> bool:
    return len(got) == len(want) and all(same_value(g, w) for g, w in zip(got, want, strict=True))


def assert_matches_oracle(got: Sequence[Sequence[Any]], want: Sequence[Sequence[Any]], ordered: bool, sql: str) -> None:
    detail = f"\nquery: {sql}\nfederated: {got}\noracle:    {want}"
    assert len(got) == len(want), "row counts differ" + detail
    if ordered:
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert same_row(g, w), f"row {i} differs" + detail
        return
    unmatched = list(want)
    for g in got:
        match = next((i for i, w in enumerate(unmatched) if same_row(g, w)), None)
        assert match is not None, f"federated row {g} is not in the oracle" + detail
        unmatched.pop(match)


# ---------------------------------------------------------------------------------------- federations


@pytest.fixture(scope="module")
def client_keys() -> he.ClientKeys:
    """One BFV key pair for the module: key generation costs more than a query."""
    return he.ClientKeys.generate()


def client_for(fed: harness.Federation, keys: he.ClientKeys) -> FederationClient:
    profile = parse_model(fed.profile_path, yaml.safe_load(fed.profile_path.read_text()), ClientProfile)
    return FederationClient(profile, keys=keys)


@dataclass
class LiveFederation:
    fed: harness.Federation
    client: FederationClient

    def __repr__(self) -> str:
        return f"LiveFederation(nodes={self.fed.node_ids})"

    def check(self, query: Query) -> None:
        answer = self.client.query(query.sql)
        assert answer.answered == self.fed.node_ids and answer.missing == []
        try:
            assert_matches_oracle(answer.rows, self.fed.oracle(query.sql), query.ordered, query.sql)
        except AssertionError:
            if query.exact_oracle_sql == query.sql:
                raise
            # DuckDB's VAR/STDDEV run in doubles: let the exact computation decide
            exact = self.fed.oracle(query.exact_oracle_sql)
            assert_matches_oracle(answer.rows, exact, query.ordered, query.exact_oracle_sql)


@contextlib.contextmanager
def live_federation(
    node_rows: NodeRows, keys: he.ClientKeys, node_settings: dict[str, Any] | None = None
) -> Iterator[LiveFederation]:
    """A federation of ``node_rows`` (on files, or where ``node_settings`` puts a node's tables) and its client."""
    with tempfile.TemporaryDirectory(prefix="hpf-prop-") as tmp:
        policy = harness.OPEN_LOOKUPS_POLICY
        with harness.federation(Path(tmp), TABLES, node_rows, policy=policy, node_settings=node_settings) as fed:
            client = client_for(fed, keys)
            try:
                yield LiveFederation(fed, client)
            finally:
                client.close()


SEEDS = (0, 1, 2, 3)


@pytest.fixture(scope="module", params=SEEDS, ids=[f"seed{s}" for s in SEEDS])
def seeded(request: pytest.FixtureRequest, client_keys: he.ClientKeys) -> Iterator[LiveFederation]:
    with live_federation(seeded_node_rows(request.param), client_keys) as live:
        yield live


# ---------------------------------------------------------------------------------------------- tests


@settings(max_examples=budget(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=queries())
def test_seeded_federation_matches_oracle(seeded: LiveFederation, query: Query) -> None:
    seeded.check(query)


@settings(
    max_examples=budget(25),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(node_rows=NODE_ROWS_STRATEGY, batch=st.lists(queries(), min_size=1, max_size=4))
def test_generated_data_matches_oracle(client_keys: he.ClientKeys, node_rows: NodeRows, batch: list[Query]) -> None:
    with live_federation(node_rows, client_keys) as live:
        for query in batch:
            live.check(query)


# ----------------------------------------------------------------------------------- hand-written cases

INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)


def deposit(
    person: str,
    *,
    employer: str | None = "Acme Co",
    city: str | None = None,
    status: int | None = None,
    active: bool | None = None,
    month: dt.date | None = None,
    amount: int | None = None,
    balance: str | None = None,
    rate: str | None = None,
    score: float | None = None,
) -> Row:
    return (
        person,
        employer,
        city,
        status,
        active,
        month,
        amount,
        None if balance is None else Decimal(balance),
        None if rate is None else Decimal(rate),
        score,
    )


def answer_rows(live: LiveFederation, sql: str) -> list[list[Any]]:
    answer = live.client.query(sql)
    assert answer.missing == []
    return answer.rows


def check_against_oracle(live: LiveFederation, sql: str, expected: list[list[Any]]) -> None:
    """The federated answer is ``expected`` exactly (types included), and so is the oracle's."""
    got = answer_rows(live, sql)
    assert_matches_oracle(got, live.fed.oracle(sql), ordered=True, sql=sql)
    assert_matches_oracle(got, expected, ordered=True, sql=sql)


def test_all_nodes_empty(client_keys: he.ClientKeys) -> None:
    with live_federation({n: {"deposits": []} for n in ("n0", "n1", "n2")}, client_keys) as live:
        check_against_oracle(
            live,
            "SELECT COUNT(*), COUNT(amount_fen), SUM(amount_fen), SUM(balance), AVG(balance), VAR_SAMP(amount_fen),"
            " STDDEV_POP(rate) FROM deposits",
            [[0, 0, None, None, None, None, None]],
        )
        check_against_oracle(live, "SELECT city_code, COUNT(*) FROM deposits GROUP BY city_code ORDER BY 1", [])
        check_against_oracle(live, "SELECT COUNT(*) FROM deposits HAVING COUNT(*) > 0", [])


def test_group_present_in_one_node_only(client_keys: he.ClientKeys) -> None:
    day = dt.date(2019, 5, 1)
    node_rows: NodeRows = {
        "n0": {
            "deposits": [
                deposit("a", city="310000", amount=10, balance="1.50", month=day),
                deposit("b", city="310000", amount=-4, balance="2.25", month=day),
            ]
        },
        "n1": {
            "deposits": [
                deposit("c", city="310000", amount=1, month=day),
                deposit("d", city="320100", amount=1000, balance="-7.00", month=dt.date(2023, 1, 9)),
            ]
        },
        "n2": {"deposits": []},
    }
    with live_federation(node_rows, client_keys) as live:
        check_against_oracle(
            live,
            "SELECT city_code, COUNT(*), SUM(amount_fen), SUM(balance) FROM deposits GROUP BY city_code ORDER BY 1",
            [["310000", 3, 7, Decimal("3.75")], ["320100", 1, 1000, Decimal("-7.00")]],
        )
        check_against_oracle(
            live,
            "SELECT EXTRACT(YEAR FROM month) AS y, city_code, COUNT(*) FROM deposits GROUP BY 1, 2 ORDER BY 1, 2",
            [[2019, "310000", 3], [2023, "320100", 1]],
        )


def test_ungrouped_aggregate_over_zero_matching_rows(client_keys: he.ClientKeys) -> None:
    node_rows: NodeRows = {
        "n0": {"deposits": [deposit("a", amount=5, balance="1.00")]},
        "n1": {"deposits": [deposit("b", amount=6, balance="2.00")]},
    }
    with live_federation(node_rows, client_keys) as live:
        check_against_oracle(
            live,
            "SELECT COUNT(*), SUM(amount_fen), COUNT(balance), AVG(balance), SUM(balance) / NULLIF(COUNT(*), 0) "
            "FROM deposits WHERE amount_fen > 1000",
            [[0, None, 0, None, None]],
        )


def test_sample_variance_of_one_row_is_null(client_keys: he.ClientKeys) -> None:
    node_rows: NodeRows = {
        "n0": {
            "deposits": [
                deposit("a", city="310000", amount=42, balance="3.10"),
                deposit("b", city="330100", amount=1, balance="1.00"),
            ]
        },
        "n1": {"deposits": [deposit("c", city="330100", amount=3, balance="2.00")]},
    }
    with live_federation(node_rows, client_keys) as live:
        check_against_oracle(
            live,
            "SELECT VAR_SAMP(amount_fen), STDDEV_SAMP(balance), VAR_POP(amount_fen), STDDEV_POP(balance) "
            "FROM deposits WHERE city_code = '310000'",
            [[None, None, 0.0, 0.0]],
        )
        check_against_oracle(
            live,
            "SELECT city_code, VAR_SAMP(amount_fen), STDDEV_SAMP(balance) FROM deposits GROUP BY city_code ORDER BY 1",
            [["310000", None, None], ["330100", 2.0, math.sqrt(0.5)]],
        )


def test_sum_of_int64_extremes_across_nodes_is_exact(client_keys: he.ClientKeys) -> None:
    node_rows: NodeRows = {
        n: {"deposits": [deposit(f"{n}a", amount=INT64_MAX), deposit(f"{n}b", amount=INT64_MAX)]}
        for n in ("n0", "n1", "n2")
    }
    node_rows["n3"] = {"deposits": [deposit("z", amount=INT64_MIN)]}
    with live_federation(node_rows, client_keys) as live:
        check_against_oracle(
            live,
            "SELECT SUM(amount_fen), COUNT(amount_fen), SUM(amount_fen) FILTER (WHERE amount_fen < 0), "
            "SUM(amount_fen) * 2 FROM deposits",
            [[6 * INT64_MAX + INT64_MIN, 7, INT64_MIN, 2 * (6 * INT64_MAX + INT64_MIN)]],
        )


def test_variance_of_int64_extremes_within_one_node(client_keys: he.ClientKeys) -> None:
    """SUM(x*x) is declared 150 bits wide, so three 64-bit values in one node must not overflow it."""
    values = [INT64_MAX, -INT64_MAX, INT64_MAX]
    node_rows: NodeRows = {
        "n0": {"deposits": [deposit(f"p{i}", amount=v) for i, v in enumerate(values)]},
        "n1": {"deposits": [deposit("q", amount=0)]},
    }
    everything = [*values, 0]
    n, s, ss = len(everything), sum(everything), sum(v * v for v in everything)
    exact_var_pop = Fraction(n * ss - s * s, n * n)
    with live_federation(node_rows, client_keys) as live:
        sql = "SELECT COUNT(*), VAR_POP(amount_fen) FROM deposits"
        got = answer_rows(live, sql)
        assert got == [[4, float(exact_var_pop)]]
        assert_matches_oracle(got, live.fed.oracle(sql), ordered=True, sql=sql)


def test_values_outside_a_domain_land_in_the_other_group(client_keys: he.ClientKeys) -> None:
    node_rows: NodeRows = {
        "n0": {
            "deposits": [
                deposit("a", city="999999", amount=5, status=9, month=dt.date(2030, 1, 1)),
                deposit("b", city="310000", amount=1, status=1, month=dt.date(2020, 1, 1)),
            ]
        },
        "n1": {
            "deposits": [
                deposit("c", city="888888", amount=7, status=2, month=dt.date(2020, 6, 1)),
                deposit("d", city=None, amount=100),
            ]
        },
    }
    with live_federation(node_rows, client_keys) as live:
        rows = answer_rows(live, "SELECT city_code, COUNT(*), SUM(amount_fen) FROM deposits GROUP BY 1")
        assert sorted(rows, key=repr) == sorted([["310000", 1, 1], [None, 1, 100], ["(other)", 2, 12]], key=repr)
        rows = answer_rows(live, "SELECT EXTRACT(YEAR FROM month) AS y, COUNT(*) FROM deposits GROUP BY y")
        assert sorted(rows, key=repr) == sorted([[2020, 2], ["(other)", 1], [None, 1]], key=repr)
        rows = answer_rows(live, "SELECT status, SUM(amount_fen) FROM deposits GROUP BY status")
        assert sorted(rows, key=repr) == sorted([[1, 1], [2, 7], ["(other)", 5], [None, 100]], key=repr)


def test_having_on_a_key_does_not_take_the_other_group_for_null(client_keys: he.ClientKeys) -> None:
    """The "(other)" group holds non-NULL values outside the domain: ``HAVING city_code IS NULL`` must drop it."""
    node_rows: NodeRows = {
        "n0": {"deposits": [deposit("a", city="999999", amount=5), deposit("b", city=None, amount=1)]},
        "n1": {"deposits": [deposit("c", city="310000", amount=7)]},
    }
    with live_federation(node_rows, client_keys) as live:
        sql = "SELECT city_code, COUNT(*) FROM deposits GROUP BY city_code HAVING city_code IS NULL"
        assert answer_rows(live, sql) == [[None, 1]]
        assert live.fed.oracle(sql) == [(None, 1)]


def test_spread_of_near_equal_large_values_is_exact(client_keys: he.ClientKeys) -> None:
    """Where DuckDB's double-based VAR/STDDEV drift, the federation (exact integers) gives the exact value."""
    amounts = [10**15, 10**15 - 1, 10**15 - 2, 10**15 - 7]
    balances = ["9999999999.99", "9999999999.98", "9999999999.97", "9999999999.97"]
    people = [deposit(f"p{i}", amount=a, balance=b) for i, (a, b) in enumerate(zip(amounts, balances, strict=True))]
    node_rows: NodeRows = {"n0": {"deposits": people[:2]}, "n1": {"deposits": people[2:]}}
    cents = [int(Decimal(b) * 100) for b in balances]
    n = len(amounts)
    var_pop_amount = Fraction(n * sum(a * a for a in amounts) - sum(amounts) ** 2, n * n)
    var_samp_cents = Fraction(n * sum(c * c for c in cents) - sum(cents) ** 2, n * (n - 1))
    with live_federation(node_rows, client_keys) as live:
        got = answer_rows(live, "SELECT VAR_POP(amount_fen), STDDEV_SAMP(balance) FROM deposits")
        assert got == [[float(var_pop_amount), math.sqrt(float(var_samp_cents)) / 100]]
        exact = live.fed.oracle(
            f"SELECT {exact_spread_sql('VAR_POP', 'amount_fen', 0, None)}, "
            f"{exact_spread_sql('STDDEV_SAMP', 'balance', 2, None)} FROM deposits"
        )
        assert_matches_oracle(got, exact, ordered=True, sql="exact spreads")


def test_variance_of_a_wide_decimal_expression(client_keys: he.ClientKeys) -> None:
    """balance - rate is a DECIMAL(15,4) whose values fit; its sum of squares must not overflow on the way."""
    node_rows: NodeRows = {
        "n0": {"deposits": [deposit("a", balance="-9999999999.99", rate="0.0100")]},
        "n1": {"deposits": [deposit("b", balance="9999999999.99", rate="99.9999"), deposit("c", balance="1.00")]},
    }
    with live_federation(node_rows, client_keys) as live:
        sql = "SELECT COUNT(balance - rate), SUM(balance - rate), VAR_POP(balance - rate) FROM deposits"
        got = answer_rows(live, sql)
        assert_matches_oracle(got, live.fed.oracle(sql), ordered=True, sql=sql)
