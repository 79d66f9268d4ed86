"""Federated-encrypted vs centralized: one GROUP BY with SUM/COUNT/AVG over N nodes x R deposit rows.

    python bench/aggregate_bench.py --nodes 8 --rows 1000000 --repeat 15

Starts the nodes and the coordinator as real processes with mutual TLS (as `hpf demo` does), runs the
query federated and encrypted through the client library, then runs the same SQL as one DuckDB query over
the same N x R rows (the same Parquet files) on the same machine, checks the answers are equal, and prints
JSON: federated_ms, centralized_ms, ratio (medians) and a per-stage breakdown of the federated path.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import duckdb

from cli.demo_federation import ensure_data, layout_for, running_parties, write_configs
from federation.client import FederationClient
from federation.profile import load_profile

TARGET_RATIO = 1.5
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--data", type=Path, default=Path("bench-data"))
    parser.add_argument(
        "--no-audit-fsync",
        dest="audit_fsync",
        action="store_false",
        help="nodes do not flush their audit log on every request (all nodes share one disk here)",
    )
    parser.add_argument(
        "--node-threads", type=int, default=None, help="DuckDB threads per node (default: cores // nodes, at least 1)"
    )
    args = parser.parse_args()

    say = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    layout = layout_for(args.data, args.nodes)
    ensure_data(layout, args.rows, args.seed, say)
    write_configs(layout, 0, args.node_threads, audit_fsync=args.audit_fsync)
    files = [layout.data / n / "deposits.parquet" for n in layout.node_ids]

    central = Centralized(files)
    central_ms: list[float] = []
    with running_parties(layout, say):
        with FederationClient(load_profile(layout.client_profile)) as client:
            client.query(QUERY)  # warm: key pair, plan caches, node contexts, file cache
            client.query(QUERY)
            central.run()
            answers = []
            for _ in range(args.repeat):  # alternate, so background load hits both alike
                answers.append(client.query(QUERY))
                ms, central_rows = central.run()
                central_ms.append(ms)
    central.close()

    equal = all(
        len(a.rows) == len(central_rows)
        and all(
            f[0] == c[0] and f[1] == c[1] and f[2] == c[2] and abs(f[3] - c[3]) <= 1e-9 * abs(c[3])
            for f, c in zip(a.rows, central_rows, strict=True)
        )
        for a in answers
    )
    fed_ms = [a.timings["total_ms"] for a in answers]

    def med(key: str) -> float:
        return round(statistics.median(a.timings[key] for a in answers), 2)

    transport = [
        a.timings["round_trip_ms"]
        - a.timings["node_total_ms"]
        - a.timings["aggregate_ms"]
        - a.timings["coordinator_plan_ms"]
        for a in answers
    ]
    result = {
        "query": QUERY,
        "nodes": args.nodes,
        "rows_per_node": args.rows,
        "total_rows": args.nodes * args.rows,
        "repeat": args.repeat,
        "node_duckdb_threads": args.node_threads or max(1, (os.cpu_count() or 1) // args.nodes),
        "audit_fsync": args.audit_fsync,
        "answers_equal": equal,
        "federated_ms": round(statistics.median(fed_ms), 2),
        "centralized_ms": round(statistics.median(central_ms), 2),
        "ratio": round(statistics.median(fed_ms) / statistics.median(central_ms), 3),
        "target_ratio": TARGET_RATIO,
        "meets_target": statistics.median(fed_ms) / statistics.median(central_ms) <= TARGET_RATIO,
        "cpu_count": os.cpu_count(),
        "federated_ms_min_max": [round(min(fed_ms), 2), round(max(fed_ms), 2)],
        "centralized_ms_min_max": [round(min(central_ms), 2), round(max(central_ms), 2)],
        "breakdown_ms_median": {
            "client_plan": med("client_plan_ms"),
            "coordinator_plan": med("coordinator_plan_ms"),
            "local_scan_slowest_node": med("node_scan_ms"),
            "encode_encrypt_slowest_node": med("node_encrypt_ms"),
            "node_handler_slowest": med("node_total_ms"),
            "transport_and_queueing": round(statistics.median(transport), 2),
            "aggregate_coordinator": med("aggregate_ms"),
            "decrypt": med("decrypt_ms"),
            "finish": med("finish_ms"),
        },
    }
    print(json.dumps(result, indent=2))
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
