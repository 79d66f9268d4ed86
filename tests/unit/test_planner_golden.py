"""Golden files for plan splitting, and unit tests of the limb codec and the BFV wrapper.

Golden file format (``tests/fixtures/plans/*.sql``, catalog ``tests/fixtures/mini_catalog.yaml``):
cases are separated by blank lines; lines starting with ``--`` are comments, and the last comment line
before a case is its title. Each case is exactly four lines::

    -- a title
    <input SQL>
    <expected plan.node_sql()>
    <expected plan.finish_sql>
    <the group keys' domains as JSON: one list per key, [] when ungrouped>

To add a case, write its input and expected lines by hand (check them, do not paste the planner's output).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
import tenseal as ts
from examples import budget
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpf.client.finish import finish
from hpf.federation.catalog import Catalog, load_catalog
from hpf.federation.crypto import he
from hpf.federation.crypto.limb_codec import (
    LIMB_BITS,
    MAX_REGIONS,
    check_range,
    join_limbs,
    limbs_for,
    split_values,
)
from hpf.federation.crypto.slot_codec import chunks, decode_totals, encode_partials
from hpf.federation.errors import CryptoError, PlanError
from hpf.federation.plan import Plan
from hpf.federation.planner import plan_query

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PLANS_DIR = FIXTURES / "plans"

# ------------------------------------------------------------------------------------------ golden files


@dataclass(frozen=True)
class GoldenCase:
    source: str
    title: str
    sql: str
    node_sql: str
    finish_sql: str
    domains: list[list[Any]]


def read_golden(path: Path) -> list[GoldenCase]:
    cases = []
    for block in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
        lines = [ln.rstrip() for ln in block.strip().splitlines()]
        comments = [ln[2:].strip() for ln in lines if ln.startswith("--")]
        body = [ln for ln in lines if ln and not ln.startswith("--")]
        if not body:
            continue
        assert len(body) == 4, f"{path.name}: a case needs 4 lines (sql, node sql, finish sql, domains): {body}"
        title = comments[-1] if comments else body[0]
        cases.append(GoldenCase(path.stem, title, body[0], body[1], body[2], json.loads(body[3])))
    return cases


GOLDEN = [case for path in sorted(PLANS_DIR.glob("*.sql")) for case in read_golden(path)]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(FIXTURES / "mini_catalog.yaml")


def test_golden_files_cover_enough_cases() -> None:
    assert len(GOLDEN) >= 15
    assert len({(c.source, c.title) for c in GOLDEN}) == len(GOLDEN), "titles must be unique within a file"


@pytest.mark.parametrize("case", GOLDEN, ids=[f"{c.source}:{c.title}" for c in GOLDEN])
def test_plan_split_matches_golden(catalog: Catalog, case: GoldenCase) -> None:
    plan = plan_query(case.sql, catalog)
    assert plan.node_sql() == case.node_sql
    assert plan.finish_sql == case.finish_sql
    assert [list(k.values) for k in plan.keys] == case.domains


@pytest.mark.parametrize("case", GOLDEN, ids=[f"{c.source}:{c.title}" for c in GOLDEN])
def test_golden_node_sql_is_what_a_node_can_run(catalog: Catalog, case: GoldenCase) -> None:
    """Every golden node query runs on an empty table of the catalog's shape: one column per key and SQL term."""
    plan = plan_query(case.sql, catalog)
    with duckdb.connect(":memory:") as con:
        create_tables(con, catalog)
        result = con.execute(plan.node_sql())
        assert [d[0] for d in result.description] == [f"k{i}" for i in range(len(plan.keys))] + [
            f"c{i}_{j}" for i, c in enumerate(plan.components) for j in range(len(c.sql_terms()))
        ]


def test_plans_are_deterministic_and_fingerprinted(catalog: Catalog) -> None:
    sql = "SELECT city_code, SUM(amount_fen) FROM deposits GROUP BY 1"
    other = load_catalog(FIXTURES / "mini_catalog.yaml")  # another load: no shared cache entry
    assert plan_query(sql, catalog).fingerprint == plan_query(sql, other).fingerprint
    assert plan_query(sql, catalog).fingerprint != plan_query(sql.replace("SUM", "AVG"), catalog).fingerprint
    assert re.fullmatch(r"[0-9a-f]{64}", plan_query(sql, catalog).fingerprint)


@pytest.mark.parametrize("position", ["1.5", "1e0", "0", "3"])
def test_group_by_position_must_name_a_select_item(catalog: Catalog, position: str) -> None:
    with pytest.raises(PlanError) as info:
        plan_query(f"SELECT city_code, COUNT(*) FROM deposits GROUP BY {position}", catalog)
    assert info.value.code == "PLAN_GROUP_BY"


@pytest.mark.parametrize(
    ("call", "shown"),
    [
        ("MIN(amount_fen)", "MIN"),
        ("QUANTILE_CONT(amount_fen, 0.5)", "PERCENTILE_CONT"),
        ("ARG_MAX(amount_fen, month)", "ARG_MAX"),
        ("MIN_BY(amount_fen, month)", "ARG_MIN"),
        ("ANY_VALUE(amount_fen)", "ANY_VALUE"),
    ],
)
def test_aggregates_that_do_not_add_up_are_refused_as_such(catalog: Catalog, call: str, shown: str) -> None:
    with pytest.raises(PlanError) as info:
        plan_query(f"SELECT {call} FROM deposits", catalog)
    assert info.value.code == "PLAN_NOT_ADDITIVE"
    assert info.value.message.startswith(f"{shown} is not supported")


# ------------------------------------------------------- plan + slot codec + finish, without encryption

ROWS = [
    ("p1", "310000", "2019-03-01", 120_000, "0.0150", "F", 0.5),
    ("p2", "310000", "2020-03-01", -4_000, "0.0300", "M", 0.1),
    ("p3", "330100", "2020-07-01", 77_000, None, "F", None),
    ("p4", None, "2024-01-01", None, "0.0125", "M", 0.9),
]


def create_tables(con: duckdb.DuckDBPyConnection, catalog: Catalog, rows: Sequence[tuple[Any, ...]] = ()) -> None:
    table = catalog.tables["deposits"]
    con.execute("CREATE TABLE deposits (" + ", ".join(f'"{c}" {col.type}' for c, col in table.columns.items()) + ")")
    if rows:
        con.executemany(f"INSERT INTO deposits VALUES ({', '.join('?' for _ in table.columns)})", list(rows))


def answer_in_process(plan: Plan, con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    """What the client would print if one node held ``con``'s rows: node query, slots, totals, finish."""
    slots = encode_partials(plan, con.execute(plan.node_sql()).fetchall())
    return [tuple(r) for r in finish(plan, decode_totals(plan, chunks(slots), regions=1)).rows]


IN_PROCESS_QUERIES = {
    "alias_shadows_a_column_in_order_by": (
        "SELECT gender, SUM(amount_fen) AS amount_fen FROM deposits GROUP BY gender ORDER BY amount_fen"
    ),
    "year_alias_named_like_its_column": (
        "SELECT EXTRACT(YEAR FROM month) AS month, COUNT(*) FROM deposits GROUP BY 1 ORDER BY month"
    ),
    "alias_shadows_a_column_in_having": (
        "SELECT gender, COUNT(*) AS rate FROM deposits GROUP BY gender HAVING rate > 1 ORDER BY gender"
    ),
    "golden_style_query": (
        "SELECT gender, AVG(amount_fen) AS mean, VAR_SAMP(rate) FROM deposits GROUP BY gender ORDER BY mean DESC"
    ),
}


@pytest.mark.parametrize("sql", list(IN_PROCESS_QUERIES.values()), ids=list(IN_PROCESS_QUERIES))
def test_plan_answers_like_duckdb_in_process(catalog: Catalog, sql: str) -> None:
    """Valid SQL that DuckDB answers must be planned and answered the same (select aliases win in ORDER BY/HAVING)."""
    with duckdb.connect(":memory:") as con:
        create_tables(con, catalog, ROWS)
        expected = con.execute(sql).fetchall()
        plan = plan_query(sql, catalog)
        got = answer_in_process(plan, con)
    assert len(got) == len(expected)
    for g_row, e_row in zip(got, expected, strict=True):
        for g, e in zip(g_row, e_row, strict=True):
            assert g == (pytest.approx(e, rel=1e-12) if isinstance(e, float) else e)


# ----------------------------------------------------------------------------------------- limb codec

BIT_WIDTHS = (64, 90, 150)


def signed_ints(bits: int) -> st.SearchStrategy[int]:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi, -1, 0, 1, lo + 1, hi - 1]))


def test_limb_counts() -> None:
    assert [limbs_for(b) for b in BIT_WIDTHS] == [3, 3, 5]
    assert LIMB_BITS == 30 and MAX_REGIONS == 256


@pytest.mark.parametrize("bits", BIT_WIDTHS)
@settings(max_examples=budget(60), deadline=None)
@given(data=st.data())
def test_split_join_round_trip(bits: int, data: st.DataObject) -> None:
    values = data.draw(st.lists(signed_ints(bits), min_size=1, max_size=20))
    limbs = split_values(values, bits)
    assert limbs.shape == (len(values), limbs_for(bits))
    assert limbs.dtype == np.int64
    assert ((limbs[:, :-1] >= 0) & (limbs[:, :-1] < (1 << LIMB_BITS))).all()  # low limbs unsigned
    assert (np.abs(limbs[:, -1]) <= (1 << (LIMB_BITS - 1))).all()  # signed top limb
    assert [join_limbs(row.tolist()) for row in limbs] == values


def _assert_limb_sums_fit(values: list[int], bits: int) -> None:
    limb_sums = [int(s) for s in split_values(values, bits).astype(object).sum(axis=0)]
    assert all(abs(s) < he.HALF_PLAIN for s in limb_sums), "a limb sum wraps modulo the plain modulus"
    assert join_limbs(limb_sums) == sum(values)


@pytest.mark.parametrize("bits", BIT_WIDTHS)
@settings(max_examples=budget(25), deadline=None)
@given(data=st.data())
def test_sums_over_256_regions_never_wrap(bits: int, data: st.DataObject) -> None:
    values = data.draw(st.lists(signed_ints(bits), min_size=MAX_REGIONS, max_size=MAX_REGIONS))
    _assert_limb_sums_fit(values, bits)


@pytest.mark.parametrize("bits", BIT_WIDTHS)
@pytest.mark.parametrize("extreme", ["max", "min"])
def test_sums_of_256_extremes_never_wrap(bits: int, extreme: str) -> None:
    value = (1 << (bits - 1)) - 1 if extreme == "max" else -(1 << (bits - 1))
    _assert_limb_sums_fit([value] * MAX_REGIONS, bits)


@pytest.mark.parametrize("bits", BIT_WIDTHS)
def test_out_of_range_values_are_refused(bits: int) -> None:
    for value in (1 << (bits - 1), -(1 << (bits - 1)) - 1, 1 << 200):
        with pytest.raises(CryptoError) as info:
            split_values([0, value], bits)
        assert info.value.code == "PARTIAL_OUT_OF_RANGE"
        with pytest.raises(CryptoError):
            check_range(value, bits)
    check_range((1 << (bits - 1)) - 1, bits)
    check_range(-(1 << (bits - 1)), bits)


# ------------------------------------------------------------------------------------------ BFV wrapper


def _is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin for n < 3.3e24 (bases: the first 12 primes)."""
    if n < 2:
        return False
    bases = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    for p in bases:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def test_plain_modulus_supports_exact_batched_sums() -> None:
    assert _is_prime(he.PLAIN_MODULUS)
    assert he.PLAIN_MODULUS % 16384 == 1  # batching for degrees up to 8192 (2n | t - 1)
    assert he.PLAIN_MODULUS.bit_length() == 40
    assert he.HALF_PLAIN == he.PLAIN_MODULUS // 2
    assert MAX_REGIONS * (1 << LIMB_BITS) < he.HALF_PLAIN  # 256 regions of 30-bit limbs never wrap
    assert [n for n in range(30) if _is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
    assert not _is_prime(1_099_511_627_777)  # 2**40 + 1 = 257 * 4278190337


@pytest.fixture(scope="module")
def keys() -> he.ClientKeys:
    return he.ClientKeys.generate()


@pytest.fixture(scope="module")
def public_ctx(keys: he.ClientKeys) -> ts.Context:
    return he.load_public_context(keys.public_context())


def test_generated_keys_use_the_federation_parameters(public_ctx: ts.Context) -> None:
    data = public_ctx.seal_context().data.key_context_data()
    assert data.total_coeff_modulus_bit_count() == he.COEFF_MODULUS_BITS
    assert data.parms().poly_modulus_degree() == he.POLY_MODULUS_DEGREE


@settings(max_examples=budget(15), deadline=None)
@given(
    size=st.one_of(st.integers(1, 8), st.just(he.SLOTS), st.integers(1, he.SLOTS)),
    parties=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    spread=st.sampled_from([1 << 30, he.HALF_PLAIN // 4]),
)
def test_encrypt_add_decrypt_is_exact(
    keys: he.ClientKeys, public_ctx: ts.Context, size: int, parties: int, seed: int, spread: int
) -> None:
    """Random vectors (limb-sized, or as large as a sum of four may be) encrypt, add and decrypt exactly."""
    rng = np.random.default_rng(seed)
    vectors = rng.integers(-spread, spread, size=(parties, size), dtype=np.int64)
    blobs = [he.encrypt_slots(public_ctx, v) for v in vectors]
    expected = vectors.sum(axis=0)
    running = he.CiphertextSum(public_ctx, [size])
    for blob in blobs:
        running.add([blob])
    assert running.parties == len(blobs)
    assert keys.decrypt(running.result()[0], size).tolist() == expected.tolist()


def test_largest_slot_values_round_trip(keys: he.ClientKeys, public_ctx: ts.Context) -> None:
    edge = np.array([he.HALF_PLAIN, -he.HALF_PLAIN, he.HALF_PLAIN - 1, -(he.HALF_PLAIN - 1), 0, 1, -1], dtype=np.int64)
    assert keys.decrypt(he.encrypt_slots(public_ctx, edge), 7).tolist() == edge.tolist()


@pytest.mark.parametrize(
    "value",
    [he.HALF_PLAIN + 1, -(he.HALF_PLAIN + 1), he.PLAIN_MODULUS, 2**62, -(2**62), 2**63 - 1, -(2**63)],
    ids=["half_plus_1", "minus_half_minus_1", "modulus", "2^62", "-2^62", "int64_max", "int64_min"],
)
def test_encrypt_refuses_values_outside_the_plain_range(public_ctx: ts.Context, value: int) -> None:
    slots = np.array([5, value, 7], dtype=np.int64)
    with pytest.raises(CryptoError) as info:
        he.encrypt_slots(public_ctx, slots)
    assert info.value.code == "SLOT_RANGE"


@pytest.mark.parametrize(
    "slots, code",
    [
        (np.zeros(0, dtype=np.int64), "SLOT_COUNT"),
        (np.zeros(he.SLOTS + 1, dtype=np.int64), "SLOT_COUNT"),
        (np.zeros((2, 2), dtype=np.int64), "SLOT_COUNT"),
        (np.zeros(3, dtype=np.int32), "SLOT_TYPE"),
        (np.zeros(3, dtype=np.float64), "SLOT_TYPE"),
    ],
    ids=["empty", "too_many", "two_dimensional", "int32", "float"],
)
def test_encrypt_refuses_malformed_slot_arrays(public_ctx: ts.Context, slots: np.ndarray, code: str) -> None:
    with pytest.raises(CryptoError) as info:
        he.encrypt_slots(public_ctx, slots)
    assert info.value.code == code


def _serialize(ctx: ts.Context, **overrides: bool) -> bytes:
    flags = {"save_public_key": True, "save_secret_key": False, "save_galois_keys": False, "save_relin_keys": False}
    flags.update(overrides)
    return ctx.serialize(**flags)


def _bfv(degree: int = he.POLY_MODULUS_DEGREE, plain: int = he.PLAIN_MODULUS) -> ts.Context:
    return ts.context(ts.SCHEME_TYPE.BFV, poly_modulus_degree=degree, plain_modulus=plain)


def _ckks() -> ts.Context:
    return ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40, 60])


CONTEXT_CASES = {
    "ckks": (lambda: _serialize(_ckks()), "CONTEXT_PARAMETERS"),
    "bfv_other_plain_modulus": (lambda: _serialize(_bfv(plain=1032193)), "CONTEXT_PARAMETERS"),
    "bfv_degree_8192": (lambda: _serialize(_bfv(degree=8192)), "CONTEXT_PARAMETERS"),
    "bfv_small_coeff_modulus": (
        lambda: _serialize(
            ts.context(
                ts.SCHEME_TYPE.BFV,
                poly_modulus_degree=4096,
                plain_modulus=he.PLAIN_MODULUS,
                coeff_mod_bit_sizes=[30, 30, 30],
            )
        ),
        "CONTEXT_PARAMETERS",
    ),
    "secret_key": (lambda: _serialize(_bfv(), save_secret_key=True), "CONTEXT_HAS_SECRET"),
    "relin_keys": (lambda: _serialize(_bfv(), save_relin_keys=True), "CONTEXT_HAS_EVAL_KEYS"),
    "no_public_key": (lambda: _serialize(_bfv(), save_public_key=False), "CONTEXT_NO_PUBLIC_KEY"),
    "garbage": (lambda: b"\x5e\xa1" * 100, "CONTEXT_INVALID"),
    "empty": (lambda: b"", "CONTEXT_INVALID"),
    "too_large": (lambda: b"\x00" * (he.MAX_CONTEXT_BYTES + 1), "CONTEXT_TOO_LARGE"),
}


@pytest.mark.parametrize("make, code", list(CONTEXT_CASES.values()), ids=list(CONTEXT_CASES))
def test_load_public_context_refuses(make: Any, code: str) -> None:
    with pytest.raises(CryptoError) as info:
        he.load_public_context(make())
    assert info.value.code == code


def test_load_public_context_accepts_a_fresh_public_context() -> None:
    ctx = he.load_public_context(_serialize(_bfv()))
    assert not ctx.is_private() and ctx.has_public_key()


def test_ciphertext_checks(keys: he.ClientKeys, public_ctx: ts.Context) -> None:
    blob = he.encrypt_slots(public_ctx, np.arange(10, dtype=np.int64))
    he.CiphertextSum(public_ctx, [10]).add([blob])
    cases = [
        (lambda: he.CiphertextSum(public_ctx, [11]).add([blob]), "CIPHERTEXT_SHAPE"),
        (lambda: he.CiphertextSum(public_ctx, [10]).add([b"not a ciphertext"]), "CIPHERTEXT_INVALID"),
        (lambda: he.CiphertextSum(public_ctx, [10]).add([blob[: len(blob) // 2]]), "CIPHERTEXT_INVALID"),
        (
            lambda: he.CiphertextSum(public_ctx, [10]).add([b"\x00" * (he.MAX_CIPHERTEXT_BYTES + 1)]),
            "CIPHERTEXT_TOO_LARGE",
        ),
        (lambda: he.CiphertextSum(public_ctx, [10, 5]).add([blob]), "CIPHERTEXT_SHAPE"),
        (lambda: he.CiphertextSum(public_ctx, [10]).result(), "CIPHERTEXT_MISSING"),
        (lambda: keys.decrypt(blob, 9), "CIPHERTEXT_SHAPE"),
    ]
    for call, code in cases:
        with pytest.raises(CryptoError) as info:
            call()
        assert info.value.code == code


def test_client_keys_need_a_secret_key() -> None:
    with pytest.raises(CryptoError) as info:
        he.ClientKeys(ts.context_from(_serialize(_bfv())))
    assert info.value.code == "KEY_NOT_PRIVATE"


def test_unreadable_key_file_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "client.bfv"
    key_file.write_bytes(b"this is not a key")
    with pytest.raises(CryptoError) as info:
        he.ClientKeys.load_or_generate(key_file)
    assert info.value.code == "KEY_FILE_INVALID"


def test_key_file_that_cannot_be_read_or_written_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "client.bfv"
    folder.mkdir()  # a folder where the key file should be
    with pytest.raises(CryptoError) as info:
        he.ClientKeys.load_or_generate(folder)
    assert info.value.code == "KEY_FILE_UNREADABLE" and str(folder) in info.value.message
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(CryptoError) as info:
        he.ClientKeys.load_or_generate(blocker / "client.bfv")
    assert info.value.code == "KEY_FILE_UNWRITABLE"


# -------------------------------------------------------------- slot codec: many regions, one answer

INT64 = st.integers(-(2**63), 2**63 - 1)


@settings(
    max_examples=budget(30), deadline=None, suppress_health_check=[HealthCheck.data_too_large, HealthCheck.too_slow]
)
@given(
    regions=st.lists(
        st.lists(st.tuples(st.sampled_from(["F", "M", None, "X"]), st.integers(0, 10**6), INT64), max_size=4),
        min_size=1,
        max_size=64,
    )
)
def test_slot_vectors_of_many_regions_sum_to_the_exact_totals(catalog: Catalog, regions: list[list[Any]]) -> None:
    """Plain (unencrypted) sum of every region's slot vector decodes to the exact pooled totals per cell."""
    plan = plan_query("SELECT gender, COUNT(amount_fen), SUM(amount_fen) FROM deposits GROUP BY gender", catalog)
    # node rows: key, COUNT(*), COUNT(amount_fen), SUM(amount_fen) - one row per distinct key per region
    total_flat = np.zeros(plan.layout.total, dtype=object)
    expected: dict[Any, list[int]] = {}
    for rows in regions:
        per_key: dict[Any, list[int]] = {}
        for key, count, total in rows:
            acc = per_key.setdefault(key, [0, 0, 0])
            acc[0] += count + 1
            acc[1] += count
            acc[2] += total if count else 0
        node_rows = [(k, *v) for k, v in per_key.items()]
        total_flat += encode_partials(plan, node_rows).astype(object)
        for key, values in per_key.items():
            cell_key = key if key in ("F", "M", None) else "(other)"
            cell = expected.setdefault(cell_key, [0, 0, 0])
            for i, v in enumerate(values):
                cell[i] += v
    assert all(abs(int(v)) < he.HALF_PLAIN for v in total_flat)
    summed = [c.copy() for c in chunks(total_flat.astype(np.int64))]
    for c in summed:
        c[-1] = len(regions)  # every region's canary adds one
    totals = decode_totals(plan, summed, regions=len(regions))
    cells = {"F": 0, "M": 1, None: 2, "(other)": 3}
    assert totals == {cells[k]: [*v, 0] for k, v in expected.items()}  # no region withheld a group
