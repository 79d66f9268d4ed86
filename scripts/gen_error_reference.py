"""Write the code tables of docs/errors.md from the registry in federation/error_codes.

python scripts/gen_error_reference.py          # rewrite the tables in the document
python scripts/gen_error_reference.py --check  # exit 1 if the document's tables differ from the registry's
"""

from __future__ import annotations

import sys
from pathlib import Path

import doc_section  # scripts/, beside this file

from hpf.cli.errors import exit_code
from hpf.federation.error_codes import REGISTRY, Code

DOC = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
DOC_START = "<!-- error codes: generated from federation/error_codes by scripts/gen_error_reference.py -->"
DOC_END = "<!-- end of error codes -->"


def _row(code: Code) -> str:
    exit_status = exit_code(code.cls("-", code=code.name))
    cells = (
        f"`{code.name}`",
        code.cls.__name__,
        code.cls.grpc_status,
        str(exit_status),
        code.effect.value,
        code.scope.value,
        code.description.replace("|", "\\|"),
    )
    return "| " + " | ".join(cells) + " |"


def markdown_tables() -> str:
    """Every declared code, one table per area, in the registry's order."""
    areas: dict[str, list[Code]] = {}
    for code in REGISTRY.values():
        areas.setdefault(code.area, []).append(code)
    lines = [DOC_START]
    for area, codes in areas.items():
        lines += [
            "",
            f"### {area}",
            "",
            "| Code | Class | gRPC status | Exit | Effect | Scope | Meaning |",
            "|---|---|---|---|---|---|---|",
            *(_row(code) for code in codes),
        ]
    return "\n".join([*lines, "", DOC_END])


def main() -> int:
    return doc_section.main(
        DOC, DOC_START, DOC_END, markdown_tables, "the registry in the code", __doc__.splitlines()[0]
    )


if __name__ == "__main__":
    sys.exit(main())
