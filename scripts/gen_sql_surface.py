"""Write the allow-list table of docs/sql-surface.md from federation/planner/surface.py.

python scripts/gen_sql_surface.py          # rewrite the table in the document
python scripts/gen_sql_surface.py --check  # exit 1 if the document's table differs from the code's
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hpf.federation.planner.surface import DOC_END, DOC_START, markdown_table

DOC = Path(__file__).resolve().parent.parent / "docs" / "sql-surface.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = DOC.read_text()
    start, end = text.index(DOC_START), text.index(DOC_END) + len(DOC_END)
    fresh = text[:start] + markdown_table() + text[end:]
    if args.check:
        if fresh != text:
            print(f"{DOC} differs from the allow-list in the code: run scripts/gen_sql_surface.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
