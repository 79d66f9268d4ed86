"""`hpf init` over a newcomer's own files: 3 regions' TPC-H-like Parquet files become a federation that starts
from the printed commands and answers exactly, and asks an operator to classify every column first.

The oracle is DuckDB over the union of the regions' raw files, read with the types they carry (not through a
catalog), so a type `hpf init` got wrong would show as a different answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import duckdb
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hpf.demo.synth.lineitem import LINEITEM_TYPES, write_lineitem
from hpf.federation.trust.channels import coordinator_target, node_target, secure_channel
from hpf.federation.trust.tls import TlsConfig

REGIONS = ("north", "south", "east")
ROWS = 4_000

Q1 = (
    "SELECT l_returnflag, l_linestatus, SUM(l_quantity) AS sum_qty, SUM(l_extendedprice) AS sum_base_price, "
    "SUM(l_extendedprice * (1 - l_discount)) AS sum_disc_price, "
    "SUM(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge, COUNT(*) AS count_order "
    "FROM lineitem WHERE l_shipdate <= DATE '1998-09-02' GROUP BY l_returnflag, l_linestatus "
    "ORDER BY l_returnflag, l_linestatus"
)
Q1_SUMS = (  # Q1 without its products
    "SELECT l_returnflag, l_linestatus, SUM(l_quantity) AS sum_qty, SUM(l_extendedprice) AS sum_base_price, "
    "SUM(l_discount) AS sum_disc, COUNT(*) AS count_order FROM lineitem WHERE l_shipdate <= DATE '1998-09-02' "
    "GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus"
)
Q6 = (
    "SELECT SUM(l_extendedprice * l_discount) AS revenue FROM lineitem WHERE l_shipdate >= DATE '1994-01-01' "
    "AND l_shipdate < DATE '1995-01-01' AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24"
)


def _hpf(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpf.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


TYPES = LINEITEM_TYPES  # what the oracle reads every region's rows as, whatever file format holds them
CSV_REGION = "east"  # its files are CSV: a reader detects 12.50 as a DOUBLE, `hpf init` declares a DECIMAL


def _write_files(folder: Path) -> dict[str, Path]:
    """Each region's lineitem: TPC-H's column names and types (DECIMAL(15,2) money, flags, DATE)."""
    folder.mkdir(parents=True)
    files = {r: folder / f"{r}.{'csv' if r == CSV_REGION else 'parquet'}" for r in REGIONS}
    for i, region in enumerate(REGIONS):
        write_lineitem(files[region], i, ROWS, len(REGIONS))
    return files


def _oracle(files: dict[str, Path], sql: str) -> list[list[object]]:
    """DuckDB over the union of the raw files, each column read as the generator wrote it (CSV as text, cast)."""
    con = duckdb.connect()
    casts = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in TYPES.items())
    parts = [
        f"SELECT {casts} FROM read_csv('{p}', header = true, all_varchar = true)"
        if p.suffix == ".csv"
        else f"SELECT {casts} FROM read_parquet('{p}')"
        for p in files.values()
    ]
    con.execute("CREATE VIEW lineitem AS " + " UNION ALL ".join(parts))
    return [list(r) for r in con.execute(sql).fetchall()]


def _exact(rows: list[list[object]]) -> list[list[object]]:
    """The CLI's JSON: DECIMAL values are strings (exact), counts integers."""
    return [[Decimal(v) if isinstance(v, str) and re.fullmatch(r"-?\d+\.\d+", v) else v for v in r] for r in rows]


def _wait_healthy(
    address: str, tls: TlsConfig, server_name: str | None, proc: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + 60
    with secure_channel(address, tls, server_name=server_name) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{server_name} exited at start: {log.read_text(errors='replace')[-2000:]}"
            with contextlib.suppress(grpc.RpcError):
                if stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0).status == 1:
                    return
            time.sleep(0.1)
    pytest.fail(f"{server_name} did not start in 60 s: {log.read_text(errors='replace')[-2000:]}")


@contextlib.contextmanager
def _started(folder: Path, printed: str) -> Iterator[None]:
    """Run the `serve` commands `hpf init` printed, as printed (backgrounded), and wait until each serves."""
    commands = [
        shlex.split(line.strip().removesuffix("&")) for line in printed.splitlines() if " serve --config " in line
    ]
    assert len(commands) == len(REGIONS) + 1, printed
    procs: list[subprocess.Popen[bytes]] = []
    tls = TlsConfig.model_validate(
        {
            "ca": str(folder / "pki/ca.pem"),
            "cert": str(folder / "pki/people/you.pem"),
            "key": str(folder / "pki/people/you.key"),
        }
    )
    try:
        for command in commands:
            config = Path(command[-1])
            log = folder / f"{config.stem}.log"
            with open(log, "wb") as out:
                procs.append(
                    subprocess.Popen(
                        command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
                    )
                )
            import yaml

            listen = yaml.safe_load(config.read_text())["listen"]
            name = coordinator_target(tls) if command[1] == "coordinator" else node_target(tls, config.stem)
            _wait_healthy(listen, tls, name, procs[-1], log)
        yield
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def test_init_federates_own_files_and_answers_exactly_once_classified(tmp_path: Path) -> None:
    files = _write_files(tmp_path / "data")
    folder = tmp_path / "fed"
    sources = [a for r in REGIONS for a in ("--source", f"{r}:lineitem={files[r]}")]
    made = _hpf("init", str(folder), "--federation", "tpch-test", *sources)
    assert made.returncode == 0, made.stderr
    assert "9 column(s) have no class yet" in made.stdout
    catalog = (folder / "federation.yaml").read_text()
    # the types the files carry, and no class guessed
    # a CSV region's 12.50 is read as DOUBLE, declared as the DECIMAL of its numerals; the Parquet regions'
    # DECIMAL(15,2) holds those exactly, and the catalog notes the narrower type every value fits
    assert re.search(r'l_quantity:\n\s+type: "DECIMAL\(15,2\)"   # DECIMAL\(5,2\) holds the bounds below', catalog)
    assert "        # class: TODO" in catalog
    assert "l_orderkey:\n        type: BIGINT   # INTEGER holds the bounds below" in catalog
    assert "        # bounds: [0, 100]   # the files' values lie within" in catalog  # l_quantity, up to 50.00
    assert "class: public" not in catalog and "class: sensitive" not in catalog
    assert _hpf("catalog", "check", str(folder / "federation.yaml")).returncode == 0
    assert (
        _hpf(
            "policy", "check", str(folder / "policies/node.yaml"), "--catalog", str(folder / "federation.yaml")
        ).returncode
        == 0
    )
    query = next(line.strip() for line in made.stdout.splitlines() if " query -p " in line)
    profile = str(folder / "client.yaml")

    with _started(folder, made.stdout):
        counted = subprocess.run(shlex.split(query) + ["--format", "json"], capture_output=True, text=True, timeout=120)
        summed = _hpf("query", "-p", profile, "--format", "json", "SELECT SUM(l_quantity) FROM lineitem")
        filtered = _hpf("query", "-p", profile, "SELECT COUNT(*) FROM lineitem WHERE l_tax > 0.02")
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout)["rows"] == _oracle(files, "SELECT COUNT(*) FROM lineitem") == [[3 * ROWS]]
    # unclassified columns: every region refuses them, naming the rule, until an operator classifies them
    for refused in (summed, filtered):
        assert refused.returncode == 4, refused.stderr
        assert "POLICY_COLUMN_UNCLASSIFIED" in refused.stderr, refused.stderr

    # the operator classifies every column and takes the suggested domains, as the catalog's comments say
    edited = catalog.replace("# class: TODO   (identifier | public | sensitive | commercial)", "class: public")
    edited = re.sub(r"# (domain: \{.*\}|bounds: \[.*\])   # .*", r"\1", edited)
    (folder / "federation.yaml").write_text(edited)
    with _started(folder, made.stdout):
        sums = _hpf("query", "-p", profile, "--format", "json", Q1_SUMS)
        q6_wide = _hpf("query", "-p", profile, "--format", "json", Q6)
    assert sums.returncode == 0, sums.stderr
    want_sums = _oracle(files, Q1_SUMS)
    assert len(want_sums) == 6  # every (returnflag, linestatus) group, each of thousands of rows
    assert _exact(json.loads(sums.stdout)["rows"]) == want_sums
    # a product of two DECIMAL(15,2) columns could outgrow a sum over 2**26 rows: refused, saying what to do
    assert q6_wide.returncode == 2 and "[PLAN_MAY_OVERFLOW]" in q6_wide.stderr, q6_wide.stderr
    assert "declare narrower column types" in q6_wide.stderr

    # ... which the catalog's comments name: the narrowest type holding every value in the files
    narrowed = re.sub(
        r'type: "(DECIMAL\(15,2\))"   # (DECIMAL\(\d+,2\)) holds the bounds below: .*', r'type: "\2"', edited
    )
    assert narrowed.count("DECIMAL(15,2)") == 0, narrowed
    (folder / "federation.yaml").write_text(narrowed)
    with _started(folder, made.stdout):
        q1 = _hpf("query", "-p", profile, "--format", "json", Q1)
        q6 = _hpf("query", "-p", profile, "--format", "json", Q6)
    assert q1.returncode == 0, q1.stderr
    assert q6.returncode == 0, q6.stderr
    assert _exact(json.loads(q1.stdout)["rows"]) == _oracle(files, Q1)
    assert _exact(json.loads(q6.stdout)["rows"]) == _oracle(files, Q6)


def test_init_narrow_types_declares_what_the_files_hold(tmp_path: Path) -> None:
    files = _write_files(tmp_path / "data")
    sources = [a for r in REGIONS for a in ("--source", f"{r}:lineitem={files[r]}")]
    made = _hpf("init", str(tmp_path / "fed"), "--narrow-types", "--class", "lineitem.l_tax=sensitive", *sources)
    assert made.returncode == 0, made.stderr
    catalog = (tmp_path / "fed/federation.yaml").read_text()
    extremes = _oracle(files, "SELECT MAX(l_extendedprice), MAX(l_quantity), MAX(l_orderkey) FROM lineitem")[0]
    # each the narrowest type holding bounds a power of ten past the extremes: [0, 100000], [0, 100], [0, 0.1]
    assert Decimal(10_000) <= extremes[0] < Decimal(100_000)
    assert 'l_extendedprice:\n        type: "DECIMAL(8,2)"   # the files hold DECIMAL(15,2)' in catalog
    assert 'l_quantity:\n        type: "DECIMAL(5,2)"' in catalog and extremes[1] == Decimal("50.00")
    assert "l_orderkey:\n        type: INTEGER" in catalog and 10_000 <= extremes[2] < 100_000
    assert 'l_tax:\n        type: "DECIMAL(2,2)"   # the files hold DECIMAL(15,2); a node refuses' in catalog
    assert "        class: sensitive\n" in catalog and catalog.count("# class: TODO") == 8
    assert "8 column(s) have no class yet" in made.stdout
    assert _hpf("catalog", "check", str(tmp_path / "fed/federation.yaml")).returncode == 0


def test_init_refuses_what_it_cannot_federate(tmp_path: Path) -> None:
    files = _write_files(tmp_path / "data")
    two = _hpf("init", str(tmp_path / "a"), *[a for r in REGIONS[:2] for a in ("--source", f"{r}:lineitem={files[r]}")])
    assert two.returncode == 2 and "[INIT_ARGS]" in two.stderr and "at least 3" in two.stderr
    missing = _hpf(
        "init", str(tmp_path / "b"), *[a for r in REGIONS for a in ("--source", f"{r}:lineitem={tmp_path / r}.parquet")]
    )
    assert missing.returncode == 2 and "no such file" in missing.stderr
    con = duckdb.connect()
    odd, short = tmp_path / "odd.parquet", tmp_path / "short.parquet"
    con.execute(f"COPY (SELECT 'x' AS l_quantity FROM range(3)) TO '{odd}' (FORMAT parquet)")
    con.execute(
        f"COPY (SELECT 1::DECIMAL(9,2) AS l_quantity, 2 AS l_extra FROM range(3)) TO '{short}' (FORMAT parquet)"
    )

    def init(folder: str, east: Path) -> subprocess.CompletedProcess[str]:
        north, south = (f"{r}:lineitem={files[r]}" for r in ("north", "south"))
        return _hpf("init", str(tmp_path / folder), "-s", north, "-s", south, "-s", f"east:lineitem={east}")

    clash = init("c", odd)  # text in one region, DECIMAL in the others
    assert clash.returncode == 2, clash.stderr
    assert "[INIT_SCHEMA] table 'lineitem', column 'l_quantity': the regions' files disagree" in clash.stderr
    assert "east: VARCHAR" in clash.stderr and "north: DECIMAL(15,2)" in clash.stderr
    narrow = init("e", short)  # a column only some regions hold is left out, and the comment says why
    assert narrow.returncode == 0, narrow.stderr
    written = (tmp_path / "e/federation.yaml").read_text()
    assert 'l_quantity:\n        type: "DECIMAL(15,2)"' in written  # the widest that holds every region's values
    assert "# l_extra: left out, not in the files of north, south" in written
    assert "# l_tax: left out, not in the files of east" in written
    ok = _hpf("init", str(tmp_path / "d"), *[a for r in REGIONS for a in ("--source", f"{r}:lineitem={files[r]}")])
    assert ok.returncode == 0, ok.stderr
    again = _hpf("init", str(tmp_path / "d"), *[a for r in REGIONS for a in ("--source", f"{r}:lineitem={files[r]}")])
    assert again.returncode == 2 and "[INIT_EXISTS]" in again.stderr
