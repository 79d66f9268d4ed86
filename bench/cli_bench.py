"""Start-up of the `hpf` command, timed as whole processes: `hpf --help` and `hpf query` against a 4-region demo.

    python bench/cli_bench.py --runs 21
    python bench/cli_bench.py --runs 21 --before /tmp/hpf-before   # and an earlier tree's hpf, in the same rounds

Starts the nodes and the coordinator as real processes with mutual TLS (as `hpf demo` does), then runs each
command below ``--runs`` times as a new process, in turn (one run of each, then the next round), so background
load hits all of them alike, and prints JSON: per command its median, p90 and min wall time in ms (from the
spawn to the exit, output read through a pipe), and for the two targets the target and whether the median meets
it. The baselines in the same run say how fast this machine starts Python and the libraries a query needs:

- ``python -c pass``, ``python -c 'import tenseal'``, ``python -c 'import grpc, tenseal'``, and the import of
  every library `hpf query` runs (QUERY_LIBRARIES: typer, rich, gRPC, TenSEAL, cryptography, pydantic, PyYAML,
  protobuf, DuckDB; with one BLAS thread, as `hpf` runs), the floor under a query's start-up;
- ``hpf --help`` (target: median at most 150 ms) and ``hpf query --help``;
- ``hpf query -p client-operator.yaml --purpose statistics "SELECT COUNT(*) FROM accounts"`` (target: median at
  most 550 ms; the operator, whose answers the default policy makes exact, so they can be checked), the demo's first
  example (a GROUP BY with ORDER BY), and a question this profile never asked before (a new literal every
  run, so its plan is never in the plan cache: what the first run of a query costs).

Correctness is checked in the run: each query's answer (as JSON) equals DuckDB over the pooled Parquet files
before the timed runs start, and every timed run must exit 0 and print the same table as the first one did.
The nodes run a policy of this bench's own that ``extends:`` the default and raises only the operator's rate
limit (listed under "policy"), since a run asks more than the default allows in a minute.

``--before DIR`` also times every `hpf` command with ``PYTHONPATH=DIR``, so that the code of DIR answers (an export
of an earlier commit: ``git archive COMMIT | tar -x -C DIR``), in the same rounds, and prints each command's
median over the earlier code's (``after_over_before``); both must print the same. The parties always run this
tree's code.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from common import code_version, prepared_layout

from hpf.demo.launcher import DemoLayout, running_parties, use_policy_extending_default
from hpf.demo.oracle import pooled
from hpf.federation.catalog import load_catalog

TARGET_HELP_MS = 150.0  # `hpf --help`, median
TARGET_QUERY_MS = 550.0  # `hpf query` against a running 4-region demo, median
COUNT_SQL = "SELECT COUNT(*) FROM accounts"
GROUP_SQL = (
    "SELECT city_code, COUNT(*) AS accounts, SUM(balance_fen) AS balance_fen FROM accounts "
    "WHERE status = 'active' GROUP BY city_code ORDER BY city_code"
)
NEW_SQL = "SELECT COUNT(*) AS accounts FROM accounts WHERE balance_fen >= {n}"  # a new literal each run
PERSON, PURPOSE = "operator", "statistics"  # the default's exact role: its answers are checked against DuckDB
COUNT_NAME = f"hpf query -p client-operator.yaml --purpose {PURPOSE} {COUNT_SQL!r}"
GROUP_NAME = f"hpf query -p client-operator.yaml --purpose {PURPOSE} GROUP_BY"
NEW_NAME = f"hpf query -p client-operator.yaml --purpose {PURPOSE} NEW (a question never asked before)"
# every library `hpf query` runs (the CLI, gRPC, BFV, signatures and TLS, configs, messages, the finishing SQL):
# importing them alone is the floor under its start-up on this machine
QUERY_LIBRARIES = (
    "typer",
    "rich.table",
    "grpc",
    "tenseal",
    "cryptography.x509",
    "pydantic",
    "yaml",
    "google.protobuf.message",
    "duckdb",
)
POLICY_OVERRIDES = {PERSON: {"rate_limit": {"requests": 1_000_000, "per_seconds": 60}}}

say: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731


def hpf_executable() -> str:
    """The `hpf` console script of this interpreter's environment."""
    beside = Path(sys.executable).parent / "hpf"
    found = str(beside) if beside.exists() else shutil.which("hpf")
    if found is None:
        raise SystemExit("no `hpf` command: install the project (pip install -e .) in this environment")
    return found


def timed(argv: Sequence[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall milliseconds of one whole process, and what it did."""
    start = time.perf_counter()
    done = subprocess.run(list(argv), capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1e3, done


def figures(ms: Sequence[float]) -> dict[str, float | int]:
    ordered = sorted(ms)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]  # nearest rank
    return {
        "runs": len(ordered),
        "median_ms": round(statistics.median(ordered), 1),
        "p90_ms": round(p90, 1),
        "min_ms": round(ordered[0], 1),
    }


def _plain(value: Any) -> str:
    """A value as JSON output and DuckDB both spell it (JSON carries decimals as strings)."""
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value) if not isinstance(value, str) else value


def check_answer(hpf: str, env: dict[str, str], layout: DemoLayout, profile: Path, sql: str) -> bool:
    """Whether `hpf query -f json` answers ``sql`` as DuckDB over the pooled files does."""
    _, done = timed([hpf, "query", "-p", str(profile), "--purpose", PURPOSE, "-f", "json", sql], env)
    if done.returncode != 0:
        say(f"query failed ({done.returncode}): {done.stderr.strip()}")
        return False
    answer = json.loads(done.stdout)
    catalog = load_catalog(layout.catalog)

    def files(table: str, node: str) -> list[str]:
        return [str(layout.data / n / f"{table}.parquet") for n in layout.node_ids if node in ("*", n)]

    expected = [[_plain(v) for v in row] for row in pooled(catalog, files, "*", sql)]
    got = [[_plain(v) for v in row] for row in answer["rows"]]
    return got == expected and answer["withheld_groups"] == 0 and not answer["regions"]["missing"]


def machine_note() -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=21, help="timed runs of each command (at least 15)")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--rows", type=int, default=200_000, help="deposit rows per node (the demo's default)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--data", type=Path, default=Path("bench-data-cli"))
    parser.add_argument(
        "--before", type=Path, default=None, help="also time `hpf` with PYTHONPATH=BEFORE in the same rounds"
    )
    args = parser.parse_args()
    if args.runs < 15:
        parser.error("--runs: at least 15, so that a median means something on a noisy machine")

    hpf, python = hpf_executable(), sys.executable
    layout, _ = prepared_layout(args.data, args.nodes, args.rows, args.seed, say)
    policy = use_policy_extending_default(
        layout,
        "cli-bench.yaml",
        "CLI bench: the default policy with the operator's rate limit raised",
        POLICY_OVERRIDES,
    )
    profile = str(layout.profile_of(PERSON))
    here = dict(os.environ)
    blas1 = {**here, "OPENBLAS_NUM_THREADS": "1"}  # as `hpf` runs (cli/app.py)
    trees = {"": here}
    if args.before is not None:
        trees["before: "] = {**os.environ, "PYTHONPATH": str(args.before.resolve())}
    # name -> (argv for run n, environment, whether every run prints the same)
    commands: dict[str, tuple[Callable[[int], list[str]], dict[str, str], bool]] = {
        "python -c pass": (lambda n: [python, "-c", "pass"], here, True),
        "python -c 'import tenseal'": (lambda n: [python, "-c", "import tenseal"], here, True),
        "python -c 'import grpc, tenseal'": (lambda n: [python, "-c", "import grpc, tenseal"], here, True),
        "python -c 'import LIBRARIES'": (lambda n: [python, "-c", "import " + ", ".join(QUERY_LIBRARIES)], blas1, True),
    }

    def new_question(offset: int) -> Callable[[int], list[str]]:
        return lambda n: [hpf, "query", "-p", profile, "--purpose", PURPOSE, NEW_SQL.format(n=offset + n)]

    for tag, env in trees.items():
        offset = 1_000_000 * (len(commands) + 1)  # each tree its own new questions
        commands |= {
            f"{tag}hpf --help": (lambda n: [hpf, "--help"], env, True),
            f"{tag}hpf query --help": (lambda n: [hpf, "query", "--help"], env, True),
            f"{tag}{COUNT_NAME}": (lambda n: [hpf, "query", "-p", profile, "--purpose", PURPOSE, COUNT_SQL], env, True),
            f"{tag}{GROUP_NAME}": (lambda n: [hpf, "query", "-p", profile, "--purpose", PURPOSE, GROUP_SQL], env, True),
            f"{tag}{NEW_NAME}": (new_question(offset), env, False),
        }
    result: dict[str, Any] = {
        "hpf": hpf,
        "before": str(args.before) if args.before is not None else None,
        "code": code_version(),
        "query_libraries": list(QUERY_LIBRARIES),
        "group_by_sql": GROUP_SQL,
        "new_sql": NEW_SQL,
        "policy": {"file": str(policy), "changes_from_default": [f"roles.{PERSON}.rate_limit: 1000000 per 60 s"]},
        "machine_before": machine_note(),
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    ok = True
    with running_parties(layout, say):
        for sql in (COUNT_SQL, GROUP_SQL, NEW_SQL.format(n=0)):
            equal = check_answer(hpf, here, layout, Path(profile), sql)
            say(f"{'equal to' if equal else 'DIFFERS FROM'} DuckDB over the pooled files: {sql}")
            ok &= equal
        first: dict[str, str] = {}
        for run in range(-1, args.runs):  # run -1 warms up (page cache, plan cache) and is not counted
            for name, (argv, env, same_output) in commands.items():
                ms, done = timed(argv(run), env)
                if done.returncode != 0:
                    say(f"{name}: exit {done.returncode}: {done.stderr.strip()[:500]}")
                    ok = False
                    continue
                # every run prints what the first did, and the code before prints what this code does
                if same_output and first.setdefault(name.removeprefix("before: "), done.stdout) != done.stdout:
                    say(f"{name}: printed something else than the first run")
                    ok = False
                if run >= 0:
                    times[name].append(ms)
            say(f"round {run + 1} of {args.runs}")
    result["machine_after"] = machine_note()
    result["commands"] = {name: figures(ms) for name, ms in times.items() if ms}
    targets = {"hpf --help": TARGET_HELP_MS, COUNT_NAME: TARGET_QUERY_MS}
    result["targets"] = {
        name: {
            "target_median_ms": target,
            "median_ms": result["commands"][name]["median_ms"],
            "met": result["commands"][name]["median_ms"] <= target,
        }
        for name, target in targets.items()
        if name in result["commands"]
    }
    if args.before is not None:  # medians of this code over the code before, each command in the same rounds
        result["after_over_before"] = {
            name: round(result["commands"][name]["median_ms"] / result["commands"][f"before: {name}"]["median_ms"], 3)
            for name in ("hpf --help", "hpf query --help", COUNT_NAME, GROUP_NAME, NEW_NAME)
            if name in result["commands"] and f"before: {name}" in result["commands"]
        }
    result["checks_pass"] = ok
    print(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
