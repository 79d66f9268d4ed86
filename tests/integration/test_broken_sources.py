"""A data file that breaks is the region's state, not the question's: truncated to half, emptied, garbled, or
holding text that does not parse as its catalog type, it stops the node at start with a clear code, and under a
running node it makes the region unwell (``NODE_UNWELL``, reported missing; its health NOT_SERVING) until the file
is good again, when the node answers exactly as DuckDB over the raw good files. No value of the file is quoted.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import harness
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from hpf.cli.app import _register, app
from hpf.federation.catalog import Catalog
from hpf.federation.errors import DataError, UnavailableError
from hpf.federation.trust.channels import node_target, secure_channel
from hpf.federation.trust.tls import TlsConfig
from hpf.node.backends.duckdb_backend import DuckDBBackend
from hpf.node.config import TableSource

_register()

COLUMNS = {"l_orderkey": "BIGINT", "l_discount": "INTEGER"}
CATALOG = Catalog.model_validate(
    {
        "federation": "t",
        "nodes": [{"id": "north", "address": "127.0.0.1:1"}],
        "tables": {"lineitem": {"columns": {c: {"type": t} for c, t in COLUMNS.items()}}},
    }
)
ROWS = [(7_000_000_000 + i, i % 11) for i in range(60_000)]  # no value of these may appear in a message
SQL = "SELECT SUM(l_orderkey), SUM(l_discount), COUNT(*) FROM lineitem"


def _garbled(good: bytes) -> bytes:
    """The file's middle (its data pages) overwritten, its header and footer intact: it still describes."""
    b = bytearray(good)
    n = len(b)
    b[n // 4 : n // 2] = random.Random(14).randbytes(n // 2 - n // 4)
    return bytes(b)


def _csv(rows: list[tuple[int, int]], tail: str = "") -> bytes:
    return ("l_orderkey,l_discount\n" + "".join(f"{k},{d}\n" for k, d in rows) + tail).encode()


# each breakage of a good file: (file suffix, good bytes -> broken bytes)
BREAKAGES: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "parquet-truncated-to-half": (".parquet", lambda good: good[: len(good) // 2]),
    "parquet-empty": (".parquet", lambda good: b""),
    "parquet-random-garbage": (".parquet", lambda good: random.Random(3).randbytes(len(good))),
    "parquet-garbled-data-pages": (".parquet", _garbled),
    # past the rows DuckDB samples to sniff the CSV's types: the column still reads as BIGINT
    "csv-value-not-a-number": (".csv", lambda good: good + b"9,eleven\n"),
    "csv-truncated-mid-row": (".csv", lambda good: good[: len(good) // 2] + b"\n12,"),
}


def _good(path: Path) -> bytes:
    if path.suffix == ".csv":
        return _csv(ROWS)
    harness.write_table(path, COLUMNS, ROWS)
    return path.read_bytes()


def _replace(path: Path, data: bytes) -> None:
    """As an operator (or a failing copy) replaces a file: a new file moved over the old one."""
    fresh = path.with_name("fresh" + path.suffix)
    fresh.write_bytes(data)
    os.replace(fresh, path)


def _oracle(path: Path) -> list[tuple[object, ...]]:
    return harness.raw_file_oracle(path, SQL)


def _no_value_in(text: str) -> None:
    assert "7000000" not in text and "eleven" not in text, text


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_broken_file_stops_the_node_at_start_with_a_code(tmp_path: Path, breakage: str) -> None:
    suffix, broken = BREAKAGES[breakage]
    path = tmp_path / f"lineitem{suffix}"
    _replace(path, broken(_good(path)))
    with pytest.raises(DataError) as info:
        DuckDBBackend(CATALOG, {"lineitem": TableSource(path=path)})
    assert info.value.code in ("NODE_TABLE_UNREADABLE", "DATA_TYPE_MISMATCH"), info.value
    assert "lineitem" in info.value.message
    _no_value_in(str(info.value))


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_file_broken_under_the_running_node_makes_it_unwell_until_restored(tmp_path: Path, breakage: str) -> None:
    suffix, broken = BREAKAGES[breakage]
    path = tmp_path / f"lineitem{suffix}"
    good = _good(path)
    _replace(path, good)
    node = DuckDBBackend(CATALOG, {"lineitem": TableSource(path=path)})
    expected = _oracle(path)
    assert [tuple(r) for r in node.run(SQL)] == expected
    _replace(path, broken(good))
    for ask in (lambda: node.run(SQL), lambda: node.run("SELECT MAX(l_orderkey) FROM lineitem")):
        with pytest.raises(UnavailableError) as info:  # every question, whichever column it reads
            ask()
        assert info.value.code == "NODE_UNWELL", info.value
        _no_value_in(str(info.value))
    refusal = node.check_sources()
    assert refusal is not None and refusal.code in ("NODE_TABLE_UNREADABLE", "DATA_TYPE_MISMATCH")
    _replace(path, good)
    assert node.check_sources() is None
    assert [tuple(r) for r in node.run(SQL)] == expected == _oracle(path)


# ------------------------------------------------------------------------------- with real servers


def _deposit(i: int) -> tuple[object, ...]:
    return (
        f"p{i}",
        "Acme Co",
        ("310000", "330100", "320100")[i % 3],
        dt.date(2019 + i % 5, 3, 1),
        i * 7,
        Decimal("1.25"),
        0.25,
    )


def _health(fed: harness.Federation, node_id: str) -> int:
    pki = fed.pki_dir
    tls = TlsConfig(ca=pki / "ca.pem", cert=pki / "coordinator.pem", key=pki / "coordinator.key")
    port = fed.nodes[node_id].port
    with secure_channel(f"127.0.0.1:{port}", tls, server_name=node_target(tls, node_id)) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="hpf.v1.Node"), timeout=10
        )
    return int(reply.status)


def _until_health(fed: harness.Federation, node_id: str, status: int) -> None:
    end = time.monotonic() + 20
    while _health(fed, node_id) != status:
        assert time.monotonic() < end, f"{node_id} never reported health {status}"
        time.sleep(0.2)


def test_a_region_whose_file_breaks_is_reported_missing_and_unhealthy_until_restored() -> None:
    rows = {
        "n0": {"deposits": [_deposit(i) for i in range(20_000)]},
        "n1": {"deposits": [_deposit(i) for i in range(20_000, 20_050)]},
    }
    sql = "SELECT COUNT(*), SUM(amount_fen) FROM deposits"
    with tempfile.TemporaryDirectory(prefix="hpf-broken-") as tmp:
        with harness.federation(Path(tmp), harness.DEPOSIT_TABLES, rows) as fed, fed.client() as client:
            path = next(p for p in fed.data_files["deposits"] if p.parent.name == "n0")
            good = path.read_bytes()
            assert client.query(sql).rows == [list(r) for r in fed.oracle(sql)]
            serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
            assert _health(fed, "n0") == serving
            _replace(path, _garbled(good))
            _until_health(fed, "n0", not_serving)  # seen without a question
            answer = client.query(sql)  # the question admitted after: n0 is missing, not the question failed
            assert answer.answered == ["n1"]
            assert [(m["node_id"], m["code"]) for m in answer.missing] == [("n0", "NODE_UNWELL")]
            assert answer.rows == [list(r) for r in fed.node_oracle("n1", sql)]
            _no_value_in(str(answer.missing))
            assert _health(fed, "n1") == serving
            _replace(path, good)
            _until_health(fed, "n0", serving)
            for _ in range(50):  # bounded: the coordinator takes n0 back once its next probe passes (every second)
                answer = client.query(sql)
                if not answer.missing:
                    break
                time.sleep(0.1)
            assert answer.missing == [] and answer.rows == [list(r) for r in fed.oracle(sql)]
            # and `hpf node serve` on the broken file does not start: one line with the code, no value
            fed.stop_node("n0")
            _replace(path, _garbled(good))
            config = Path(tmp) / "n0-serve.yaml"
            config.write_text(yaml.safe_dump(fed.node_configs["n0"].model_dump(mode="json")))
            result = CliRunner().invoke(app, ["node", "serve", "--config", str(config)])
            assert result.exit_code != 0 and "NODE_TABLE_UNREADABLE" in result.output, result.output
            assert "deposits" in result.output
            _no_value_in(result.output)


# ------------------------------------------------------------------ breaks the file checks cannot see coming


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """A rewrite no size or modification time shows: the same file (inode), as many bytes, and its modification
    time set back to what it was (``touch -r``, a restore tool, a copy that keeps times)."""
    before = path.stat()
    assert len(data) == before.st_size
    with path.open("r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def test_a_question_whose_file_breaks_after_the_check_blames_the_region_not_the_question(tmp_path: Path) -> None:
    """The file is broken between the node's look at its files and the scan (here: the moment the scan starts):
    the engine fails on the file, and the node checks its files right then instead of blaming the question."""
    path = tmp_path / "lineitem.parquet"
    good = _good(path)
    node = DuckDBBackend(CATALOG, {"lineitem": TableSource(path=path)})
    seen: list[DataError | None] = []
    node.on_checked(seen.append)  # what the node's health follows

    def break_as_the_scan_starts(stop: Callable[[], None]) -> None:
        _replace(path, _garbled(good))

    with pytest.raises(UnavailableError) as info:
        node.run(SQL, on_abandon=break_as_the_scan_starts)
    assert info.value.code == "NODE_UNWELL", info.value
    _no_value_in(str(info.value))
    assert seen and seen[-1] is not None and seen[-1].code == "NODE_TABLE_UNREADABLE"  # health told at once
    _replace(path, good)
    assert [tuple(r) for r in node.run(SQL)] == _oracle(path)
    assert seen[-1] is None


def test_a_file_rewritten_keeping_its_size_and_time_makes_the_region_unwell() -> None:
    """Size and modification time are not enough to see a change: the node's look at its files takes the inode
    and the change time too, so such a rewrite is seen by the watch (health) and by the next question."""
    rows = {
        "n0": {"deposits": [_deposit(i) for i in range(20_000)]},
        "n1": {"deposits": [_deposit(i) for i in range(20_000, 20_050)]},
    }
    sql = "SELECT COUNT(*), SUM(amount_fen) FROM deposits"
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    with tempfile.TemporaryDirectory(prefix="hpf-broken-") as tmp:
        with harness.federation(Path(tmp), harness.DEPOSIT_TABLES, rows) as fed, fed.client() as client:
            path = next(p for p in fed.data_files["deposits"] if p.parent.name == "n0")
            good = path.read_bytes()
            assert client.query(sql).rows == [list(r) for r in fed.oracle(sql)]
            # asked at once, before the watch's next look: the question sees it first
            _rewrite_in_place(path, _garbled(good))
            answer = client.query(sql)
            assert [(m["node_id"], m["code"]) for m in answer.missing] == [("n0", "NODE_UNWELL")]
            assert answer.rows == [list(r) for r in fed.node_oracle("n1", sql)]
            assert _health(fed, "n0") == not_serving  # told when the question found it, not a second later
            _rewrite_in_place(path, good)
            _until_health(fed, "n0", serving)
            assert client.query(sql).rows == [list(r) for r in fed.oracle(sql)]
            # and without a question: the watch alone sees the same rewrite
            _rewrite_in_place(path, _garbled(good))
            _until_health(fed, "n0", not_serving)
            _rewrite_in_place(path, good)
            _until_health(fed, "n0", serving)
            answer = client.query(sql)
            assert answer.missing == [] and answer.rows == [list(r) for r in fed.oracle(sql)]
