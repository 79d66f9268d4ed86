"""A node is sent a client's public context once; later requests name it by digest, and a node that lost it
(restart) is sent it again without the client noticing."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import harness
import pytest

from federation import he
from federation.errors import CryptoError
from node.executor import PartialExecutor

TABLES: dict[str, Any] = {
    "deposits": {
        "columns": {
            "city_code": {"type": "VARCHAR", "domain": {"values": ["310000", "330100"]}},
            "month": {"type": "DATE"},
            "amount_fen": {"type": "BIGINT"},
        }
    }
}
ROWS = {
    "a": {"deposits": [("310000", dt.date(2020, 1, 1), 100), ("330100", dt.date(2021, 1, 1), 7)]},
    "b": {"deposits": [("310000", dt.date(2022, 1, 1), -40)]},
}
SQL = "SELECT city_code, SUM(amount_fen) FROM deposits GROUP BY city_code ORDER BY city_code"


def test_context_travels_once_then_by_digest_and_is_resent_after_a_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, int, str]] = []  # (node, context bytes received, digest)
    original = PartialExecutor.compute

    forget: dict[str, bool] = {}

    def recording(self: PartialExecutor, query_id: str, sql: str, ctx: bytes, fp: str, digest: str = "") -> Any:
        seen.append((self.node_id, len(ctx), digest))
        if not ctx and forget.pop(self.node_id, False):
            raise CryptoError("this party does not hold that public context; send it", code="CONTEXT_UNKNOWN")
        return original(self, query_id, sql, ctx, fp, digest)

    monkeypatch.setattr(PartialExecutor, "compute", recording)
    with tempfile.TemporaryDirectory() as tmp, harness.federation(Path(tmp), TABLES, ROWS) as fed:
        with fed.client() as client:
            expected = [list(r) for r in fed.oracle(SQL)]
            assert client.query(SQL).rows == expected
            digest = he.context_digest(client.keys.public_context())
            first = sorted(seen)
            assert [n for n, _, _ in first] == ["a", "b"]
            assert all(size == len(client.keys.public_context()) and d == digest for _, size, d in first)

            seen.clear()
            assert client.query(SQL).rows == expected
            assert sorted(seen) == [("a", 0, digest), ("b", 0, digest)]  # digest only

            # node "a" loses the context (restart): it refuses once, the coordinator resends it
            forget["a"] = True
            seen.clear()
            answer = client.query(SQL)
            assert answer.rows == expected and answer.missing == []
            full = len(client.keys.public_context())
            assert sorted(seen) == [("a", 0, digest), ("a", full, digest), ("b", 0, digest)], seen


def test_a_context_that_does_not_match_its_digest_is_refused() -> None:
    keys = he.ClientKeys.generate()

    class NoBackend:
        def run(self, sql: str) -> list[tuple[Any, ...]]:
            raise AssertionError("must not run")

    from federation.catalog import Catalog

    catalog = Catalog.model_validate({"federation": "t", "nodes": [{"id": "a", "address": "h:1"}], "tables": TABLES})
    executor = PartialExecutor("a", catalog, NoBackend())
    with pytest.raises(CryptoError) as info:
        executor.compute("q", "SELECT COUNT(*) FROM deposits", keys.public_context(), "", "0" * 64)
    assert info.value.code == "CONTEXT_DIGEST_MISMATCH"
    with pytest.raises(CryptoError) as info:
        executor.compute("q", "SELECT COUNT(*) FROM deposits", b"", "", "f" * 64)
    assert info.value.code == "CONTEXT_UNKNOWN"
