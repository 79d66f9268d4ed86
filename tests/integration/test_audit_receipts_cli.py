"""`hpf audit verify --receipts` on the receipts file a real client wrote, in every form docs/auditors.md shows.

The client keeps every region's receipts in one file. Verifying one region's log checks only that region's
receipts, each against that region's key, and counts the others as skipped; a receipt of that region that was
tampered with still fails (exit 7).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import pytest

from hpf.client.profile import load_profile

REGIONS = ("a", "b", "c")
NODE = "b"  # the region whose log is verified
TABLES: dict[str, Any] = {
    "deposits": {
        "columns": {
            "city_code": {"type": "VARCHAR", "class": "public", "domain": {"values": ["310000", "330100"]}},
            "month": {"type": "DATE", "class": "public"},
            "amount_fen": {"type": "BIGINT", "class": "public"},
        }
    }
}
ROWS = {n: {"deposits": [("310000", dt.date(2020, 1, i + 1), 100 * (i + 1))]} for i, n in enumerate(REGIONS)}
QUESTIONS = (
    "SELECT city_code, SUM(amount_fen) FROM deposits GROUP BY city_code ORDER BY city_code",
    "SELECT COUNT(*) FROM deposits",
)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    root = tmp_path_factory.mktemp("audit-receipts")
    with harness.federation(root, TABLES, ROWS) as f:
        with f.client() as client:
            for sql in QUESTIONS:
                assert client.query(sql).rows == [list(r) for r in f.oracle(sql)]
        yield f


@pytest.fixture(scope="module")
def receipts(fed: harness.Federation) -> Path:
    path = load_profile(fed.profile_path).receipts  # where the client kept them
    assert path is not None
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["node_id"] for r in kept) == sorted(REGIONS * len(QUESTIONS))  # every region's, in one file
    return path


def readme_forms(fed: harness.Federation) -> dict[str, list[str]]:
    """Each way docs/auditors.md runs `hpf audit verify ... --receipts` (before the --receipts option)."""
    key = fed.root / f"{NODE}.pub"
    key.write_text(next(n.audit_key for n in fed.catalog.nodes if n.id == NODE) or "")
    directory = str(fed.audit_dir(NODE))
    return {
        "catalog": [directory, "--catalog", str(fed.catalog_path), "--node", NODE],
        "log-key": [directory],
        "public-key": [directory, "--public-key", str(key), "--node", NODE],
    }


def hpf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpf.cli", "audit", "verify", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def tampered(source: Path, target: Path, change: str) -> Path:
    """The receipts file with the first of NODE's receipts changed: its entry edited, or relabelled as another
    region's."""
    lines = source.read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if json.loads(line)["node_id"] == NODE)
    receipt = json.loads(lines[i])
    if change == "entry":
        receipt["entry"] = receipt["entry"].replace('"decision":"allowed"', '"decision":"refused"')
    else:
        receipt["node_id"] = "a"
    lines[i] = json.dumps(receipt, sort_keys=True)
    target.write_text("\n".join(lines) + "\n")
    return target


@pytest.mark.parametrize("form", ["catalog", "log-key", "public-key"])
def test_only_the_regions_own_receipts_are_checked(
    fed: harness.Federation, receipts: Path, tmp_path: Path, form: str
) -> None:
    args = readme_forms(fed)[form]
    mine, others = len(QUESTIONS), len(QUESTIONS) * (len(REGIONS) - 1)
    result = hpf(*args, "--receipts", str(receipts))
    assert result.returncode == 0, result.stderr
    assert f"node {NODE}" in result.stdout
    assert f"{mine} receipt(s) of node {NODE} still in the log, {others} of other nodes skipped" in result.stdout
    assert "Traceback" not in result.stderr and "error:" not in result.stderr
    report = json.loads(hpf(*args, "--receipts", str(receipts), "--format", "json").stdout)
    assert (report["ok"], report["receipts_checked"], report["receipts_skipped"]) == (True, mine, others)
    for change, code in (("entry", "AUDIT_RECEIPT_MISMATCH"), ("label", "AUDIT_RECEIPT_MISMATCH")):
        bad = hpf(*args, "--receipts", str(tampered(receipts, tmp_path / f"{change}.jsonl", change)))
        assert bad.returncode == 7, (change, bad.stdout, bad.stderr)
        assert bad.stderr.splitlines()[-1].startswith(f"error: [{code}] "), (change, bad.stderr)
