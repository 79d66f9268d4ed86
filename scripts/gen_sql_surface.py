"""Write the allow-list table of docs/sql-surface.md from federation/planner/allow_list.py.

python scripts/gen_sql_surface.py          # rewrite the table in the document
python scripts/gen_sql_surface.py --check  # exit 1 if the document's table differs from the code's
"""

from __future__ import annotations

import sys
from pathlib import Path

import doc_section  # scripts/, beside this file

from hpf.federation.planner.allow_list import DOC_END, DOC_START, markdown_table

DOC = Path(__file__).resolve().parent.parent / "docs" / "sql-surface.md"


def main() -> int:
    return doc_section.main(
        DOC, DOC_START, DOC_END, markdown_table, "the allow-list in the code", __doc__.splitlines()[0]
    )


if __name__ == "__main__":
    sys.exit(main())
