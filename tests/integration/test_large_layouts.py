"""Answers spread over several ciphertexts, and a client that takes its catalog from the coordinator."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import harness
import yaml

from hpf.client.federation_client import FederationClient
from hpf.client.profile import ClientProfile
from hpf.federation.config_files import parse_model

TABLES = harness.MONTHLY_TABLES


def _rows(seed: int, n: int) -> list[tuple[Any, ...]]:
    return harness.monthly_rows(seed, n, 10**12)


def test_a_plan_over_several_ciphertexts_equals_the_oracle() -> None:
    rows = {f"n{i}": {"deposits": _rows(i, 300)} for i in range(3)}
    sql = (
        "SELECT city_code, month, COUNT(*), SUM(amount_fen), STDDEV_POP(amount_fen) FROM deposits "
        "GROUP BY city_code, month ORDER BY city_code, month"
    )
    with tempfile.TemporaryDirectory() as tmp, harness.federation(Path(tmp), TABLES, rows) as fed:
        with fed.client() as client:
            plan = client.plan(sql)
            assert len(plan.layout.chunk_sizes) >= 5  # (4 + 2) x (372 + 2) cells x 15 slots: several ciphertexts
            answer = client.query(sql)
        expected = fed.oracle(sql)
        assert len(answer.rows) == len(expected) > 300
        for got, want in zip(answer.rows, expected, strict=True):
            assert got[:4] == list(want[:4])
            assert abs(got[4] - want[4]) <= 1e-9 * max(abs(want[4]), 1.0)


def test_client_without_a_catalog_file_takes_the_coordinators() -> None:
    rows = {"n0": {"deposits": _rows(7, 20)}}
    with tempfile.TemporaryDirectory() as tmp, harness.federation(Path(tmp), TABLES, rows) as fed:
        doc = yaml.safe_load(fed.profile_path.read_text())
        del doc["catalog"]
        profile = parse_model(fed.profile_path, doc, ClientProfile)
        with FederationClient(profile) as client:
            answer = client.query("SELECT COUNT(*), SUM(amount_fen) FROM deposits")
            assert client.catalog.federation == "test"
        assert [tuple(r) for r in answer.rows] == fed.oracle("SELECT COUNT(*), SUM(amount_fen) FROM deposits")
