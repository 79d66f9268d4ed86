"""What several benchmarks share: the options of the federation they start, and the code they measured.

The benchmarks are run as scripts (``python bench/NAME.py``), so this folder is on their path and they import
this module as ``common``.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Any


def add_federation_options(parser: argparse.ArgumentParser, data: str = "bench-data") -> None:
    """The options of the nodes a benchmark starts: where their data are generated (``--data``), whether they
    flush their audit log on every request (``--no-audit-fsync``) and their DuckDB threads (``--node-threads``)."""
    parser.add_argument("--data", type=Path, default=Path(data))
    parser.add_argument(
        "--no-audit-fsync",
        dest="audit_fsync",
        action="store_false",
        help="nodes do not flush their audit log on every request (all nodes share one disk here)",
    )
    parser.add_argument(
        "--node-threads", type=int, default=None, help="DuckDB threads per node (default: cores // nodes, at least 1)"
    )


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
