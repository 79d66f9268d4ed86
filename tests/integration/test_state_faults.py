"""A node whose state directory stops taking writes while it runs (its disk full, its device failing) blames
itself, not the question: every question gets ``NODE_STATE_UNWRITABLE`` (the region reported missing), none is
answered without its audit entry, no entry a receipt acknowledged is lost, the log is left whole (no torn line,
nothing to repair at a restart), and once the disk takes writes again the node answers the next question.

The fault is made where the node writes: every ``write(2)`` into a file under the node's audit directory puts on
disk only what room is left, then fails with ``ENOSPC``, as a full disk does.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import harness
import pytest

from hpf.federation.audit.verify import verify_log
from hpf.node.privacy_budget import Budget

SQL = "SELECT COUNT(*), SUM(amount_fen) FROM deposits"


def _deposit(i: int) -> tuple[object, ...]:
    return (f"p{i}", "Acme Co", ("310000", "330100")[i % 2], dt.date(2020 + i % 4, 3, 1), i * 7, Decimal("1.25"), 0.5)


ROWS = {
    "n0": {"deposits": [_deposit(i) for i in range(200)]},
    "n1": {"deposits": [_deposit(i) for i in range(200, 260)]},
}


@contextlib.contextmanager
def disk_full(monkeypatch: pytest.MonkeyPatch, directory: Path, room: int) -> Iterator[None]:
    """Writes into files under ``directory`` fill the ``room`` bytes left on its disk, then fail with ENOSPC."""
    real_write = os.write
    left = [room]
    inside = str(directory.resolve()) + os.sep

    def write(fd: int, data: bytes) -> int:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if not target.startswith(inside) or not data:
            return real_write(fd, data)
        if left[0] == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(fd, bytes(data)[: left[0]])
        left[0] -= written
        return written

    with monkeypatch.context() as m:
        m.setattr(os, "write", write)
        yield


def _lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "a torn line was left in the log"
    return data.splitlines()


@pytest.mark.parametrize("room", [0, 40], ids=["no-room", "room-for-part-of-an-entry"])
def test_a_node_whose_disk_fills_blames_itself_loses_nothing_and_serves_again(
    monkeypatch: pytest.MonkeyPatch, room: int
) -> None:
    with tempfile.TemporaryDirectory(prefix="hpf-state-") as tmp:
        with harness.federation(Path(tmp), harness.DEPOSIT_TABLES, ROWS) as fed, fed.client() as client:
            audit = fed.audit_dir("n0")
            first = client.query(SQL)
            assert first.missing == [] and first.rows == [list(r) for r in fed.oracle(SQL)]
            acknowledged = [r for r in first.receipts if r.node_id == "n0"]
            entries_before = _lines(audit / "entries.jsonl")
            checkpoints_before = _lines(audit / "checkpoints.jsonl")

            with disk_full(monkeypatch, audit, room):
                for _ in range(2):  # and the next question alike: nothing is left half-done by the first
                    answer = client.query(SQL)
                    assert answer.answered == ["n1"]
                    assert [(m["node_id"], m["code"]) for m in answer.missing] == [("n0", "NODE_STATE_UNWRITABLE")]
                    assert answer.rows == [list(r) for r in fed.node_oracle("n1", SQL)]
                    assert tmp not in answer.missing[0]["message"]  # the node's paths stay in its own log
                # nothing answered means nothing written: not a whole entry, not part of one
                assert _lines(audit / "entries.jsonl") == entries_before
                assert _lines(audit / "checkpoints.jsonl") == checkpoints_before

            again = client.query(SQL)  # the disk takes writes again: the same running node answers
            assert again.missing == [] and again.rows == [list(r) for r in fed.oracle(SQL)]
            entries = _lines(audit / "entries.jsonl")
            assert entries[: len(entries_before)] == entries_before  # every acknowledged entry is kept
            assert [json.loads(e)["index"] for e in entries] == list(range(len(entries)))
            receipts = acknowledged + [r for r in again.receipts if r.node_id == "n0"]
            report = verify_log(audit, receipts=receipts, node_id="n0")
            assert report.ok, report
            fed.restart_node("n0")  # and the log opens as it is: nothing to repair
            assert not list(audit.glob("*.torn-*"))
            assert client.query(SQL).missing == []


DP_POLICY = harness.OPEN_POLICY.with_name("open-dp.yaml")  # caseworkers: epsilon 1 per answer, 3 a day
DP_BUDGET = Budget(3.0, 1e-4, "day")
DP_TABLES: dict[str, Any] = {
    "visits": {
        "contribution": {"person": "person_id", "max_rows": 2, "max_regions": 1},
        "columns": {
            "person_id": {"type": "VARCHAR", "class": "identifier"},
            "amount": {"type": "BIGINT", "class": "public", "bounds": [0, 100]},
        },
    }
}
DP_ROWS = {n: {"visits": [(f"V{n}-{i}", i % 100) for i in range(200)]} for n in ("n0", "n1")}
DP_SQL = "SELECT COUNT(*) AS n, SUM(amount) AS total FROM visits"


def test_a_dp_answer_whose_entry_cannot_be_written_is_not_charged(monkeypatch: pytest.MonkeyPatch) -> None:
    """The charge to the asker's privacy budget is given back when the answer cannot leave for want of its
    audit entry: nothing was released. Once the disk takes writes, an answer is charged as before."""
    with tempfile.TemporaryDirectory(prefix="hpf-state-") as tmp:
        with harness.federation(Path(tmp), DP_TABLES, DP_ROWS, policy=DP_POLICY) as fed, fed.client() as client:
            ledger = fed.nodes["n0"].handler.privacy.ledger
            assert ledger is not None
            with disk_full(monkeypatch, fed.audit_dir("n0"), 0):
                answer = client.query(DP_SQL)
                assert [(m["node_id"], m["code"]) for m in answer.missing] == [("n0", "NODE_STATE_UNWRITABLE")]
            assert ledger.spent("caseworker", DP_BUDGET).queries == 0
            answer = client.query(DP_SQL)
            assert answer.missing == [] and answer.privacy["mode"] == "dp"
            spent = ledger.spent("caseworker", DP_BUDGET)
            assert (spent.epsilon, spent.queries) == (1.0, 1)
