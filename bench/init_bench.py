"""A newcomer's first federated answer: from 4 regions' Parquet files to an exact COUNT(*), timed end to end.

    python bench/init_bench.py --rows 1000000

Writes each region's TPC-H-like ``lineitem`` (``--rows`` rows per region, DECIMAL(15,2) money, flags, dates) to
Parquet, then does what the README tells a newcomer, as whole processes, and times each step: ``hpf init`` over
the 4 files; the ``serve`` commands it prints (every node, then the coordinator), until each answers its health
check over mutual TLS; and the first query it prints, ``SELECT COUNT(*) FROM lineitem``. The answer must equal
DuckDB over the pooled files. Prints JSON: each step's wall time in seconds and the total, against the target of
5 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hpf.demo.synth.lineitem import write_lineitem
from hpf.federation.trust.channels import coordinator_target, node_target, secure_channel
from hpf.federation.trust.tls import TlsConfig

REGIONS = ("north", "south", "east", "west")
TARGET_S = 300.0
WAIT_S = 600.0  # every wait is bounded


def write_files(folder: Path, rows: int) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {region: folder / f"{region}.parquet" for region in REGIONS}
    for i, region in enumerate(REGIONS):
        write_lineitem(files[region], i, rows, len(REGIONS))
    return files


def hpf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpf.cli", *args],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        stdin=subprocess.DEVNULL,
    )


def wait_serving(address: str, tls: TlsConfig, name: str | None, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT_S
    with secure_channel(address, tls, server_name=name) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited at start ({proc.returncode})")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0).status == 1:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    raise SystemExit(f"{name} did not serve within {WAIT_S:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="lineitem rows per region")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hpf-init-bench-"))
    files = write_files(work / "data", args.rows)
    folder = work / "fed"
    timings: dict[str, float] = {}
    started = time.perf_counter()
    made = hpf("init", str(folder), *[a for r in REGIONS for a in ("--source", f"{r}:lineitem={files[r]}")])
    timings["init_s"] = time.perf_counter() - started
    if made.returncode != 0:
        raise SystemExit(made.stderr)
    serve = [shlex.split(line.strip().removesuffix("&")) for line in made.stdout.splitlines() if " serve " in line]
    query = next(shlex.split(line.strip()) for line in made.stdout.splitlines() if " query -p " in line)
    tls = TlsConfig.model_validate(
        {
            k: str(folder / "pki" / v)
            for k, v in {"ca": "ca.pem", "cert": "people/you.pem", "key": "people/you.key"}.items()
        }
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        began = time.perf_counter()
        for command in serve:
            procs.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            )
        for command, proc in zip(serve, procs, strict=True):
            config = Path(command[-1])
            listen = yaml.safe_load(config.read_text())["listen"]
            name = coordinator_target(tls) if command[1] == "coordinator" else node_target(tls, config.stem)
            wait_serving(listen, tls, name, proc)
        timings["start_s"] = time.perf_counter() - began
        began = time.perf_counter()
        answered = subprocess.run([*query, "--format", "json"], capture_output=True, text=True, timeout=WAIT_S)
        timings["first_query_s"] = time.perf_counter() - began
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
    if answered.returncode != 0:
        raise SystemExit(answered.stderr)
    got = json.loads(answered.stdout)["rows"]
    paths = ", ".join(f"'{p}'" for p in files.values())
    want = [list(r) for r in duckdb.connect().execute(f"SELECT COUNT(*) FROM read_parquet([{paths}])").fetchall()]
    total = sum(timings.values())
    print(
        json.dumps(
            {
                "regions": len(REGIONS),
                "rows_per_region": args.rows,
                **{k: round(v, 2) for k, v in timings.items()},
                "total_s": round(total, 2),
                "target_s": TARGET_S,
                "met": total <= TARGET_S,
                "answer": got,
                "equals_duckdb": got == want,
            },
            indent=2,
        )
    )
    if got != want:
        raise SystemExit("the federated COUNT(*) differs from DuckDB over the pooled files")


if __name__ == "__main__":
    main()
