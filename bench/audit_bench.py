"""The audit log's costs: one append (what every request pays at a node) and a full verification.

    python bench/audit_bench.py --entries 100000

Appends realistic entries (the fields a node writes) to a fresh log, with fsync on and off, and verifies the
log as `hpf audit verify` does (every root and every checkpoint signature), then with only the roots and the
latest signature. Prints JSON: microseconds per append (median and p99 over the last run), and entries per
second verified.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from hpf.federation.audit.log import AuditLog
from hpf.federation.audit.verify import verify_log

FIELDS: dict[str, str | int | bool | None] = {
    "time": "2026-11-28T08:30:10.123Z",
    "node": "shanghai",
    "via": "coordinator",
    "identity": "caseworker-0042",
    "role": "caseworker",
    "purpose": "loan-review",
    "consent": False,
    "operation": "query",
    "query": "9f" * 32,
    "nonce": "ab" * 16,
    "decision": "allowed",
    "code": "",
    "rule": "",
    "ciphertext": "cd" * 32,
}


def appends(directory: Path, n: int, fsync: bool) -> list[float]:
    micros = []
    with AuditLog.open(directory, "shanghai", fsync=fsync) as log:
        for _ in range(n):
            t = time.perf_counter()
            log.append(FIELDS)
            micros.append((time.perf_counter() - t) * 1e6)
    return micros


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000, help="entries in the log that is verified")
    parser.add_argument("--fsync-appends", type=int, default=2_000, help="appends timed with fsync on")
    args = parser.parse_args()
    out: dict[str, object] = {"entries": args.entries}
    with tempfile.TemporaryDirectory(prefix="hpf-audit-bench-") as tmp:
        synced = appends(Path(tmp) / "synced", args.fsync_appends, fsync=True)
        out["append_us_fsync"] = {
            "median": round(statistics.median(synced), 1),
            "p99": round(statistics.quantiles(synced, n=100)[98], 1),
        }
        plain = appends(Path(tmp) / "log", args.entries, fsync=False)
        out["append_us_no_fsync"] = {
            "median": round(statistics.median(plain), 1),
            "p99": round(statistics.quantiles(plain, n=100)[98], 1),
        }
        for label, every in (("verify_all_signatures", True), ("verify_roots_and_latest_signature", False)):
            t = time.perf_counter()
            report = verify_log(Path(tmp) / "log", check_all_signatures=every)
            seconds = time.perf_counter() - t
            if not report.ok:
                raise SystemExit(f"the benchmark's own log does not verify: {report.message}")
            out[label] = {"seconds": round(seconds, 2), "entries_per_s": round(args.entries / seconds)}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
