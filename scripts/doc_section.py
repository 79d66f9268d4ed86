"""The generated section of a document between two markers: rewritten, or checked for drift (--check)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def main(doc: Path, start: str, end: str, render: Callable[[], str], source: str, description: str) -> int:
    """Rewrite the part of ``doc`` from ``start`` to ``end`` (markers included) as ``render()`` gives it; with
    ``--check``, write nothing and exit 1 when it differs (naming ``source``, what the section is generated from)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = doc.read_text()
    first, last = text.index(start), text.index(end) + len(end)
    fresh = text[:first] + render() + text[last:]
    if args.check:
        if fresh != text:
            script = Path(sys.argv[0]).name
            print(f"{doc} differs from {source}: run scripts/{script}", file=sys.stderr)
            return 1
        return 0
    doc.write_text(fresh)
    return 0
