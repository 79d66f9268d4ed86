"""Federated-encrypted vs centralized: one GROUP BY with SUM/COUNT/AVG over N nodes x R deposit rows.

    python bench/aggregate_bench.py --nodes 8 --rows 1000000 --repeat 15

Starts the nodes and the coordinator as real processes with mutual TLS (as `hpf demo` does) and runs the
query three ways, in turn (so background load hits all alike):

- exact: federated and encrypted through the client library, as an operator for the purpose statistics (the one
  role the default policy answers exactly);
- dp: the same, as an analyst, whose answers the default policy makes differentially private (clamped node
  SQL: at most max_rows rows per person, values clamped into their bounds; Skellam noise in every cell);
- centralized: the same SQL as one DuckDB query over the same N x R rows (the same Parquet files).

It checks the exact answers equal the centralized ones, and every DP answer's counts and sums lie within 6
stated noise sd of DuckDB over the files with the same clamping, and prints JSON: federated_ms (exact),
centralized_ms, ratio (medians), a per-stage breakdown, and the same for dp with its overhead over exact.

The regions no longer send their own timings with their answers (they stay in their logs), so the breakdown's
node stages (local scan, encode + encrypt, the node's handler total) are read from the nodes' logs after the
run: each node logs ``query <query id> answered: ... scan_ms=.. encrypt_ms=..`` and then ``query <nonce> handled
in .. ms`` for every question it answers, matched here to each answer by its query id (and the handler line by
order, checked to carry one nonce per question across the nodes). The slowest answering node counts, per stage,
per question; a figure that cannot be read for every question is printed as null.

Secure aggregation's masks are always on: every region masks its answer and there is no switch to turn them
off, so both federated figures include them. Their cost is seen only against figures measured before them
(see PREVIOUS_NO_MASKS: the README's, from the code before masks and DP, on the same 2-core machine).

The nodes run a policy of this bench's own, beside the copied default: it ``extends: default.yaml`` and only
raises the operator's and analyst's rate limits and the analyst's privacy budget (so the bench is not
refused once a month's budget is spent); listed under "policy" in the output. Epsilon, delta, the threshold
and the catalog's bounds are the default's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from common import add_federation_options, prepared_layout

from hpf.client.answers import QueryAnswer
from hpf.client.federation_client import FederationClient
from hpf.client.profile import load_profile
from hpf.demo.launcher import DemoLayout, running_parties, use_policy_extending_default
from hpf.demo.oracle import clamped_totals, noisy_cells
from hpf.federation.catalog import load_catalog

TARGET_RATIO = 1.5
DP_TARGET_OVERHEAD = 1.10  # DP's federated median at most 10% above the exact one
EXACT_PERSON, EXACT_PURPOSE = "operator", "statistics"
DP_PERSON, DP_PURPOSE = "analyst", "statistics"
DP_TOLERANCE_SD = 6
# this bench's figures before secure aggregation and DP (README, 8 nodes x 1,000,000 rows, 31 runs, 2 cores)
PREVIOUS_NO_MASKS = {
    "federated_ms_median": "70-88",
    "centralized_ms_median": "48-56",
    "ratio": "1.46-1.57",
    "source": "README 'Benchmarks', measured with signed questions, policies and audit, before masks and DP",
}
# raised for this bench only (see the module docstring); merged over the copied default policy
POLICY_OVERRIDES: dict[str, Any] = {
    EXACT_PERSON: {"rate_limit": {"requests": 1_000_000, "per_seconds": 60}},
    "analyst": {
        "rate_limit": {"requests": 1_000_000, "per_seconds": 60},
        "privacy": {"budget": {"epsilon": 1_000_000, "delta": 0.5}},
    },
}
QUERY = (
    "SELECT EXTRACT(YEAR FROM month) AS year, COUNT(*) AS n, SUM(amount_fen) AS total_fen, "
    "AVG(amount_fen) AS avg_fen FROM deposits GROUP BY year ORDER BY year"
)


class Centralized:
    """The same SQL as one DuckDB query over all N x R rows (the same Parquet files)."""

    def __init__(self, files: list[Path]) -> None:
        self._con = duckdb.connect(":memory:")
        listed = ", ".join(f"'{f}'" for f in files)
        self._con.execute(f"CREATE VIEW deposits AS SELECT * FROM read_parquet([{listed}])")

    def run(self) -> tuple[float, list[tuple[Any, ...]]]:
        t = time.perf_counter()
        rows = self._con.execute(QUERY).fetchall()
        return (time.perf_counter() - t) * 1e3, rows

    def close(self) -> None:
        self._con.close()


def write_bench_policy(layout: DemoLayout) -> dict[str, Any]:
    """A policy extending the copied default with the overrides above; every node config is pointed at it."""
    path = use_policy_extending_default(
        layout,
        "aggregate-bench.yaml",
        "aggregate benchmark: the default policy with rate limits and the analyst's budget raised",
        POLICY_OVERRIDES,
    )
    return {"file": str(path), "extends": layout.policy.name, "roles": POLICY_OVERRIDES}


# what a node logs at INFO (logger "hpf.node") for every question it answers: node/executor.py, node/auditor.py
ANSWERED_LINE = re.compile(
    r"hpf\.node: query (?P<query>[0-9a-f]{12}) answered: .*scan_ms=(?P<scan>[0-9.]+) encrypt_ms=(?P<encrypt>[0-9.]+)"
)
HANDLED_LINE = re.compile(r"hpf\.node: query (?P<nonce>[0-9a-f]{1,12}) handled in (?P<ms>[0-9.]+) ms")


@dataclass(frozen=True)
class NodeStages:
    """One node's own timings of one question, read from its log."""

    scan_ms: float
    encrypt_ms: float
    handler_ms: float | None  # None: no handled line for it before the node's next answer
    nonce: str | None


def read_node_log(path: Path) -> dict[str, NodeStages]:
    """The stages a node logged per question (first 12 hex of the query id). A question answered in more than
    one run keeps its last run (the one summed). The handled line follows the answered line of the same request;
    the bench asks one question at a time, so the next handled line before any other answer is its own."""
    stages: dict[str, NodeStages] = {}
    pending: tuple[str, float, float] | None = None

    def close(handler_ms: float | None, nonce: str | None) -> None:
        if pending is not None:
            query, scan, encrypt = pending
            stages[query] = NodeStages(scan, encrypt, handler_ms, nonce)

    if not path.exists():
        return stages
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if m := ANSWERED_LINE.search(line):
            close(None, None)
            pending = (m["query"], float(m["scan"]), float(m["encrypt"]))
        elif (h := HANDLED_LINE.search(line)) and pending is not None:
            close(float(h["ms"]), h["nonce"])
            pending = None
    close(None, None)
    return stages


@dataclass(frozen=True)
class SlowestNode:
    """Per question: the slowest answering node's figure for each stage, None where a node's was not read."""

    scan_ms: float | None
    encrypt_ms: float | None
    handler_ms: float | None


def slowest_nodes(answer: QueryAnswer, logs: dict[str, dict[str, NodeStages]]) -> SlowestNode:
    read = [logs.get(node, {}).get(answer.query_id[:12]) for node in answer.answered]
    if not read or any(r is None for r in read):
        return SlowestNode(None, None, None)
    stages = [r for r in read if r is not None]
    nonces = {r.nonce for r in stages}
    # the same question carries the same nonce at every node: else the order matching went wrong somewhere
    handler_read = all(r.handler_ms is not None for r in stages) and len(nonces) == 1
    return SlowestNode(
        scan_ms=max(r.scan_ms for r in stages),
        encrypt_ms=max(r.encrypt_ms for r in stages),
        handler_ms=max(r.handler_ms or 0.0 for r in stages) if handler_read else None,
    )


def _median(values: list[float | None]) -> float | None:
    """The median, or None unless every question's figure was read."""
    if not values or any(v is None for v in values):
        return None
    return round(statistics.median(v for v in values if v is not None), 2)


def _breakdown(answers: list[QueryAnswer], logs: dict[str, dict[str, NodeStages]]) -> dict[str, float | None]:
    def med(key: str) -> float | None:
        return _median([a.timings.get(key) for a in answers])

    nodes = [slowest_nodes(a, logs) for a in answers]

    def transport(a: QueryAnswer, node: SlowestNode) -> float | None:
        parts = [a.timings.get(k) for k in ("round_trip_ms", "coordinator_plan_ms")]
        if node.handler_ms is None or any(p is None for p in parts):
            return None
        round_trip, plan = (p or 0.0 for p in parts)
        return round_trip - node.handler_ms - plan

    return {
        "client_plan": med("client_plan_ms"),
        "coordinator_plan": med("coordinator_plan_ms"),
        "local_scan_slowest_node": _median([n.scan_ms for n in nodes]),
        "encode_encrypt_slowest_node": _median([n.encrypt_ms for n in nodes]),
        "node_handler_slowest": _median([n.handler_ms for n in nodes]),
        "transport_and_queueing": _median([transport(a, n) for a, n in zip(answers, nodes, strict=True)]),
        "client_verify": med("verify_ms"),  # each region's statement and ciphertext digest
        "client_sum_decrypt": med("sum_decrypt_ms"),  # the client's own sum of the regions' ciphertexts
        "receipts_verify_sum_decrypt": med("decrypt_ms"),  # everything the client does with the answer
        "answer_ciphertext_bytes": med("answer_bytes"),
        "finish": med("finish_ms"),
    }


def _logs_read(answers: list[QueryAnswer], logs: dict[str, dict[str, NodeStages]]) -> dict[str, int]:
    nodes = [slowest_nodes(a, logs) for a in answers]
    return {
        "questions": len(answers),
        "stages_read": sum(n.scan_ms is not None for n in nodes),
        "handler_read": sum(n.handler_ms is not None for n in nodes),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--repeat", type=int, default=15)
    add_federation_options(parser)
    args = parser.parse_args()

    say = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    layout, _ = prepared_layout(
        args.data, args.nodes, args.rows, args.seed, say, args.node_threads, audit_fsync=args.audit_fsync
    )
    policy = write_bench_policy(layout)
    files = [layout.data / n / "deposits.parquet" for n in layout.node_ids]

    central = Centralized(files)
    central_ms: list[float] = []
    answers: list[QueryAnswer] = []
    dp_answers: list[QueryAnswer] = []
    with running_parties(layout, say):
        with (
            FederationClient(load_profile(layout.profile_of(EXACT_PERSON))) as client,
            FederationClient(load_profile(layout.profile_of(DP_PERSON))) as dp_client,
        ):
            for _ in range(2):  # warm: key pairs, plan caches, node contexts, file cache
                client.query(QUERY, purpose=EXACT_PURPOSE)
                dp_client.query(QUERY, purpose=DP_PURPOSE)
            central.run()
            dp_plan = dp_client.plan(QUERY)
            central_rows: list[tuple[Any, ...]] = []

            def run_central() -> None:
                ms, rows = central.run()
                central_ms.append(ms)
                central_rows[:] = rows

            steps = [
                lambda: answers.append(client.query(QUERY, purpose=EXACT_PURPOSE)),
                lambda: dp_answers.append(dp_client.query(QUERY, purpose=DP_PURPOSE)),
                run_central,
            ]
            for i in range(args.repeat):  # all three in turn, each first as often, so background load hits all
                for j in range(len(steps)):
                    steps[(i + j) % len(steps)]()
    central.close()
    # the parties have stopped: their logs are complete (each was started afresh with this run)
    node_logs = {node: read_node_log(layout.log(node)) for node in layout.node_ids}

    equal = all(
        len(a.rows) == len(central_rows)
        and all(
            f[0] == c[0] and f[1] == c[1] and f[2] == c[2] and abs(f[3] - c[3]) <= 1e-9 * abs(c[3])
            for f, c in zip(a.rows, central_rows, strict=True)
        )
        and a.privacy == {"mode": "exact"}
        for a in answers
    )
    say("checking the DP answers against DuckDB over each region's files, clamped")
    catalog = load_catalog(layout.catalog)

    def region_files(table: str, node: str) -> list[str]:
        return [str(layout.data / n / f"{table}.parquet") for n in layout.node_ids if node in ("*", n)]

    oracle = clamped_totals(catalog, region_files, layout.node_ids, dp_plan)
    worst, dp_ok = 0.0, True
    for a in dp_answers:
        cells, honest = noisy_cells(a, dp_plan, catalog, oracle)
        dp_ok &= honest and a.privacy.get("mode") == "dp" and bool(cells) and not a.missing
        worst = max([worst, *(c.off_sd for c in cells)])
    dp_ok &= worst <= DP_TOLERANCE_SD

    fed_ms = [a.timings["total_ms"] for a in answers]
    dp_ms = [a.timings["total_ms"] for a in dp_answers]
    fed, dp, cen = statistics.median(fed_ms), statistics.median(dp_ms), statistics.median(central_ms)
    result = {
        "query": QUERY,
        "nodes": args.nodes,
        "rows_per_node": args.rows,
        "total_rows": args.nodes * args.rows,
        "repeat": args.repeat,
        "node_duckdb_threads": args.node_threads or max(1, (os.cpu_count() or 1) // args.nodes),
        "audit_fsync": args.audit_fsync,
        "cpu_count": os.cpu_count(),
        "masks": (
            "always on: every region masks its answer and nothing turns that off, so both federated figures "
            "include the masks; compare with previous_no_masks for their cost"
        ),
        "asker": f"{EXACT_PERSON} (purpose {EXACT_PURPOSE})",
        "answers_equal": equal,
        "federated_ms": round(fed, 2),
        "centralized_ms": round(cen, 2),
        "ratio": round(fed / cen, 3),
        "target_ratio": TARGET_RATIO,
        "meets_target": fed / cen <= TARGET_RATIO,
        "federated_ms_min_max": [round(min(fed_ms), 2), round(max(fed_ms), 2)],
        "centralized_ms_min_max": [round(min(central_ms), 2), round(max(central_ms), 2)],
        "breakdown_ms_median": _breakdown(answers, node_logs),
        "node_stages_from_logs": {
            "source": f"{layout.log('<node>')} (INFO, logger hpf.node): slowest answering node per question",
            "exact": _logs_read(answers, node_logs),
            "dp": _logs_read(dp_answers, node_logs),
        },
        "dp": {
            "asker": f"{DP_PERSON} (purpose {DP_PURPOSE})",
            "privacy": {k: v for k, v in dp_answers[0].privacy.items() if k != "noise"},
            "noise_sd": {n["component"]: round(n["sd"], 1) for n in dp_answers[0].privacy["noise"]},
            "suppressed_groups_median": statistics.median(a.suppressed_groups for a in dp_answers),
            "within_sd_of_clamped_oracle": round(worst, 2),
            "answers_within_tolerance": dp_ok,
            "tolerance_sd": DP_TOLERANCE_SD,
            "federated_ms": round(dp, 2),
            "federated_ms_min_max": [round(min(dp_ms), 2), round(max(dp_ms), 2)],
            "ratio_to_centralized": round(dp / cen, 3),
            "overhead_vs_exact": round(dp / fed, 3),
            "target_overhead": DP_TARGET_OVERHEAD,
            "meets_target": dp / fed <= DP_TARGET_OVERHEAD,
            "breakdown_ms_median": _breakdown(dp_answers, node_logs),
        },
        "previous_no_masks": PREVIOUS_NO_MASKS,
        "policy": policy,
    }
    print(json.dumps(result, indent=2))
    return 0 if equal and dp_ok else 1


if __name__ == "__main__":
    sys.exit(main())
