"""What several benchmarks share: the options of the federation they start, its layout made ready, and the code
they measured.

The benchmarks are run as scripts (``python bench/NAME.py``), so this folder is on their path and they import
this module as ``common``.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpf.demo.launcher import DemoLayout, ensure_data, layout_for, write_configs


def add_federation_options(parser: argparse.ArgumentParser) -> None:
    """The options of the nodes a benchmark starts: where their data are generated (``--data``), whether they
    flush their audit log on every request (``--no-audit-fsync``) and their DuckDB threads (``--node-threads``)."""
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


def prepared_layout(
    data: Path,
    nodes: int,
    rows: int,
    seed: int,
    say: Callable[[str], None],
    node_threads: int | None = None,
    *,
    audit_fsync: bool = True,
) -> tuple[DemoLayout, float]:
    """The demo's layout of ``nodes`` regions under ``data``, ready to start: each region's tables generated (unless
    an earlier run made them with the same ``rows`` and ``seed``), every party's certificates and configs written
    (ports chosen as the parties start); and the seconds the tables took."""
    layout = layout_for(data, nodes)
    t = time.perf_counter()
    ensure_data(layout, rows, seed, say)
    data_s = time.perf_counter() - t
    write_configs(layout, 0, node_threads, audit_fsync=audit_fsync)
    return layout, data_s


def code_version() -> dict[str, Any]:
    """The commit measured, and which tracked files differed from it (others may be editing the tree)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"root": str(root), "commit": commit, "modified": [line[3:] for line in status.splitlines()]}
