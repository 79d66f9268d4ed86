"""One stalled region under many concurrent clients: throughput and latency, healthy vs one region stopped.

    python bench/stall_bench.py --clients 32 --seconds 30

Starts a federation of N regions (4 by default) and the coordinator as real processes with mutual TLS (as
`hpf demo` does), then runs C concurrent clients (32 by default), each asking one aggregate question after
another as an operator (purpose operations: exact answers, no privacy budget to run out), for a bounded
time and count, twice:

- healthy: every region running;
- stalled: one region's process stopped with SIGSTOP for the whole phase (its connections stay open, so
  nothing refuses: a question sent to it waits for its deadline); SIGCONT afterwards, always.

It then waits (bounded) until an answer covers every region again and says how long that took.

Prints JSON: per phase, the answers, errors, throughput (answers a second, over the phase's time including the
questions still running at its end), latency p50/p95/max, and how the stalled region was named missing
(NODE_TIMEOUT: a question that was waiting on it when it stalled; NODE_UNWELL: one admitted without it); the
ratio of stalled to healthy throughput, and the target (at least 0.8). The questions that were waiting on the
region when it stalled wait out their deadline (it cannot be known unwell before a question misses it), so the
stalled phase also reports its figures from when the last of them was answered ("after_the_wait").

The coordinator runs the demo's configuration (deadline_ms 10000, the default 16 workers); its and the regions'
rate limits are raised for this bench only, so no question is refused for its rate.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from common import prepared_layout

from hpf.client.federation_client import FederationClient
from hpf.client.profile import load_profile
from hpf.demo.launcher import DemoLayout, running_parties, use_policy_extending_default
from hpf.federation.errors import FederationError

TARGET_RATIO = 0.8  # throughput with one region stalled, at least this share of the healthy throughput
PERSON, PURPOSE = "operator", "operations"  # the default's exact role: no privacy budget runs out
QUERY = (
    "SELECT EXTRACT(YEAR FROM month) AS year, COUNT(*) AS n, SUM(amount_fen) AS total_fen "
    "FROM deposits GROUP BY year ORDER BY year"
)
UNLIMITED = {"requests": 1_000_000, "per_seconds": 60}
RECOVERY_WAIT_S = 60.0


@dataclass
class Phase:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    spans: list[tuple[float, float, bool]] = field(default_factory=list)  # start, end, waited on a stalled region
    missing: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    started: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The phase's figures; with a stalled region, also those from the end of the last question that waited on
        it (NODE_TIMEOUT) to the phase's end."""
        lat = sorted(self.latencies_ms)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None

        summary = {
            "answers": len(lat),
            "errors": dict(self.errors),
            "missing_codes": dict(self.missing),
            "wall_s": round(self.wall_s, 2),
            "throughput_qps": round(len(lat) / self.wall_s, 2) if self.wall_s else 0.0,
            "latency_ms": {
                "p50": pct(0.5),
                "p95": pct(0.95),
                "max": round(lat[-1], 1) if lat else None,
                "mean": round(statistics.fmean(lat), 1) if lat else None,
            },
        }
        waited = [end for _, end, timed_out in self.spans if timed_out]
        if waited:  # from when the last question that waited on a stalled region was answered
            since = max(waited)
            after = [end - start for start, end, _ in self.spans if start >= since]
            span = self.started + self.wall_s - since
            summary["after_the_wait"] = {
                "from_s": round(since - self.started, 2),
                "answers": len(after),
                "throughput_qps": round(len(after) / span, 2) if span > 0 else 0.0,
                "latency_ms_p50": round(statistics.median(after) * 1e3, 1) if after else None,
            }
        return summary


def run_phase(clients: list[FederationClient], name: str, seconds: float, per_client: int) -> Phase:
    """Every client asks one question after another until ``seconds`` have passed or it asked ``per_client``."""
    phase, lock = Phase(name), threading.Lock()
    ends = time.monotonic() + seconds

    def ask(client: FederationClient) -> None:
        for _ in range(per_client):
            if time.monotonic() >= ends:
                return
            t = time.monotonic()
            try:
                answer = client.query(QUERY, purpose=PURPOSE)
            except FederationError as err:
                with lock:
                    phase.errors[err.code] += 1
                continue
            end = time.monotonic()
            with lock:
                phase.latencies_ms.append((end - t) * 1e3)
                phase.spans.append((t, end, any(m["code"] == "NODE_TIMEOUT" for m in answer.missing)))
                phase.missing.update(m["code"] for m in answer.missing)

    started = phase.started = time.monotonic()
    threads = [threading.Thread(target=ask, args=(c,), daemon=True) for c in clients]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=seconds + 120.0)  # a question outlives its phase by at most the client's own timeout
    phase.wall_s = time.monotonic() - started
    return phase


def raise_rate_limits(layout: DemoLayout) -> None:
    use_policy_extending_default(
        layout,
        "stall-bench.yaml",
        "stall benchmark: the default policy with the operator's rate limit raised",
        {PERSON: {"rate_limit": UNLIMITED}},
    )
    config = yaml.safe_load(layout.coordinator_config.read_text(encoding="utf-8"))
    config["rate_limit"] = UNLIMITED
    layout.coordinator_config.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0, help="each phase's length")
    parser.add_argument("--per-client", type=int, default=2000, help="at most this many questions per client per phase")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--data", type=Path, default=Path("bench-data-stall"))
    args = parser.parse_args()

    say = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    layout, _ = prepared_layout(args.data, args.nodes, args.rows, args.seed, say)
    raise_rate_limits(layout)
    coordinator_config = yaml.safe_load(layout.coordinator_config.read_text(encoding="utf-8"))
    stalled = layout.node_ids[-1]
    with running_parties(layout, say) as parties:
        process = next(p.process for p in parties if p.name == stalled)
        clients = [FederationClient(load_profile(layout.profile_of(PERSON))) for _ in range(args.clients)]
        try:
            for c in clients:  # warm: channels, plan caches, the regions' copies of the context
                c.query(QUERY, purpose=PURPOSE)
            say(f"healthy: {args.clients} clients for {args.seconds:.0f} s")
            healthy = run_phase(clients, "healthy", args.seconds, args.per_client)
            say(f"stalled: region {stalled} stopped (SIGSTOP) for {args.seconds:.0f} s")
            os.kill(process.pid, signal.SIGSTOP)
            try:
                stall = run_phase(clients, "stalled", args.seconds, args.per_client)
            finally:
                os.kill(process.pid, signal.SIGCONT)
            resumed = time.monotonic()
            recovered_s = None
            while time.monotonic() - resumed < RECOVERY_WAIT_S:
                if not clients[0].query(QUERY, purpose=PURPOSE).missing:
                    recovered_s = round(time.monotonic() - resumed, 2)
                    break
                time.sleep(0.2)
        finally:
            for c in clients:
                c.close()
    h, s = healthy.summary(), stall.summary()
    ratio = s["throughput_qps"] / h["throughput_qps"] if h["throughput_qps"] else 0.0
    result = {
        "query": QUERY,
        "nodes": args.nodes,
        "rows_per_node": args.rows,
        "clients": args.clients,
        "phase_seconds": args.seconds,
        "cpu_count": os.cpu_count(),
        "coordinator": {
            k: coordinator_config.get(k, "default") for k in ("deadline_ms", "min_deadline_ms", "max_workers")
        },
        "stalled_region": stalled,
        "healthy": h,
        "stalled": s,
        "throughput_ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "after_the_wait_ratio": (
            round(s["after_the_wait"]["throughput_qps"] / h["throughput_qps"], 3)
            if "after_the_wait" in s and h["throughput_qps"]
            else None
        ),
        "back_in_answers_after_sigcont_s": recovered_s,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
