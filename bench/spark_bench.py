"""A region on Spark: the node's own time for an aggregate against Spark's own time for the same SQL.

    python bench/spark_bench.py --rows 10000000 --repeat 15

One region (Shanghai) whose tables are the demo's synthetic Parquet files (hpf.demo.synth, ``--rows`` deposit
rows), read by its node through Spark in local mode (``--master``, default ``local[2]``: Spark in the node's
process). The node and a coordinator start as real processes with mutual TLS (as the other benches do). In turn,
``--repeat`` times each (the order alternating, so background load hits both alike):

- node: the aggregate asked through the client library as the operator (exact answers); the node's own stages
  from its log after the run (``scan_ms``, ``encrypt_ms``, and the handler's total);
- direct: the same node query, rendered for Spark as the node renders it, in a warm Spark session of this
  process with the node's own settings (the same master and configuration, the same views cast to the catalog
  types, ANSI arithmetic): Spark's own time, collected.

The target: the node adds at most 20% plus 50 ms to Spark's own time (median handler total <= 1.2 x median
direct + 50 ms). Every decrypted answer is checked in the run against DuckDB over the same Parquet files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from common import code_version, prepared_layout
from postgres_bench import (
    DEADLINE_MS,
    PERSON,
    POLICY_OVERRIDES,
    QUERY,
    QUERY_MS,
    SECURE_AGGREGATION,
    Say,
    duckdb_answer,
    equal_rows,
    measure,
    node_figures,
    spread,
)

from hpf.client.federation_client import FederationClient
from hpf.client.profile import load_profile
from hpf.demo.launcher import DemoLayout, use_policy_extending_default
from hpf.federation.catalog import Catalog, load_catalog
from hpf.federation.hpf_schema import TABLE_NAMES
from hpf.federation.planner.dialects import plan_node_sql
from hpf.node.backends import spark_schema
from hpf.node.backends.spark_backend import SESSION_CONF

TARGET = "node_ms <= 1.2 * direct_ms + 50 (medians; node_ms: the node's handler total)"
CONF = {"spark.sql.shuffle.partitions": "4", "spark.driver.memory": "2g"}


def point_node_at_spark(layout: DemoLayout, master: str) -> dict[str, Any]:
    """The node's config: every table read by Spark from the region's Parquet files, the scan limit raised; and
    the coordinator's wait raised to match. Returns what was changed, for the output."""
    region = layout.node_ids[0]
    path = layout.node_config(region)
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["tables"] = {t: {"spark": {"path": str(layout.data / region / f"{t}.parquet")}} for t in TABLE_NAMES}
    config["spark"] = {"master": master, "conf": CONF}
    config["limits"] = {"query_ms": QUERY_MS}
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    coordinator = yaml.safe_load(layout.coordinator_config.read_text(encoding="utf-8"))
    coordinator["deadline_ms"] = DEADLINE_MS
    layout.coordinator_config.write_text(yaml.safe_dump(coordinator, sort_keys=False), encoding="utf-8")
    policy = use_policy_extending_default(
        layout, "spark-bench.yaml", "spark bench: one region alone, rate limit raised", POLICY_OVERRIDES
    )
    doc = yaml.safe_load(policy.read_text(encoding="utf-8"))
    doc["secure_aggregation"] = SECURE_AGGREGATION
    policy.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return {"node_limits_query_ms": QUERY_MS, "coordinator_deadline_ms": DEADLINE_MS, "spark": config["spark"]}


class Direct:
    """The node query in a warm Spark session of this process, with the node's settings and views."""

    def __init__(self, layout: DemoLayout, catalog: Catalog, master: str) -> None:
        from pyspark.sql import SparkSession

        builder = SparkSession.builder.master(master).appName("hpf-bench-direct")
        for key, value in {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false", **CONF}.items():
            builder = builder.config(key, value)
        self._spark = builder.getOrCreate()
        self._spark.sparkContext.setLogLevel("OFF")
        for key, value in SESSION_CONF.items():
            self._spark.conf.set(key, value)
        region = layout.node_ids[0]
        for name in TABLE_NAMES:
            raw = f"__hpf_source_{name}"
            self._spark.read.parquet(str(layout.data / region / f"{name}.parquet")).createOrReplaceTempView(raw)
            self._spark.sql(spark_schema.view_sql(name, spark_schema.quoted(raw), catalog.tables[name]))

    def run(self, node_sql: str) -> float:
        t = time.perf_counter()
        self._spark.sql(node_sql).collect()
        return (time.perf_counter() - t) * 1e3

    def close(self) -> None:
        self._spark.stop()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--data", type=Path, default=Path("bench-data-spark"))
    parser.add_argument("--master", default="local[2]")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    say: Say = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    layout, data_s = prepared_layout(args.data, 1, args.rows, args.seed, say)
    changed = point_node_at_spark(layout, args.master)
    catalog = load_catalog(layout.catalog)
    with FederationClient(load_profile(layout.profile_of(PERSON))) as planner:
        node_sql = plan_node_sql(planner.plan(QUERY), catalog, "spark")
    t = time.perf_counter()
    direct = Direct(layout, catalog, args.master)
    direct_start_s = time.perf_counter() - t
    try:
        # the node starts with its lookup facts, computed in Spark over the region's 10M rows: up to a minute here
        answers, direct_ms = measure(layout, direct, node_sql, args.repeat, say, start_s=300.0)
    finally:
        direct.close()
    duck_rows = duckdb_answer(layout.data / layout.node_ids[0] / "deposits.parquet")
    node = node_figures(layout, answers)
    handler, direct_spread = spread(node["handler"]), spread(direct_ms)
    node_med, direct_med = handler["median"], direct_spread["median"]
    equal_duckdb = all(equal_rows(a.rows, duck_rows) and not a.missing for a in answers)
    result = {
        "query": QUERY,
        "node_sql_spark": node_sql,
        "region": layout.node_ids[0],
        "rows": args.rows,
        "seed": args.seed,
        "repeat": args.repeat,
        "cpu_count": os.cpu_count(),
        "master": args.master,
        "data_generated_s": round(data_s, 1),
        "direct_session_start_s": round(direct_start_s, 1),
        "node_ms": handler,
        "node_scan_ms": spread(node["scan"]),
        "node_encrypt_ms": spread(node["encrypt"]),
        "node_outside_scan_ms": spread(node["outside_scan"]),
        "direct_ms": direct_spread,
        "client_total_ms": spread([a.timings["total_ms"] for a in answers]),
        "node_added_ms": None if node_med is None or direct_med is None else round(node_med - direct_med, 2),
        "target": TARGET,
        "target_ms": None if direct_med is None else round(1.2 * direct_med + 50, 2),
        "meets_target": None if node_med is None or direct_med is None else node_med <= 1.2 * direct_med + 50,
        "answers_equal_duckdb": equal_duckdb,
        "node_log": str(layout.log(layout.node_ids[0])),
        "raised_for_bench": changed,
        "code": code_version(),
    }
    print(json.dumps(result, indent=2, default=str))
    return 0 if equal_duckdb else 1


if __name__ == "__main__":
    sys.exit(main())
