"""The catalog `hpf init` writes: the classes given on the command line, and the catalog's text with a comment
on every decision left to the operator."""

from __future__ import annotations

import json
from collections.abc import Sequence

import yaml

from hpf.cli.init_column_types import suggested_bounds
from hpf.cli.init_sources import INIT_ARGS, InferredTable
from hpf.federation.errors import ConfigError

CLASSES = ("identifier", "public", "sensitive", "commercial")


def parse_classes(items: Sequence[str], tables: dict[str, InferredTable]) -> dict[tuple[str, str], str]:
    """``[TABLE.]COLUMN=CLASS`` options: the classes the operator gives on the command line."""
    out: dict[tuple[str, str], str] = {}
    for item in items:
        target, sep, cls = item.partition("=")
        table, dot, column = target.rpartition(".")
        if not sep or cls not in CLASSES:
            raise ConfigError(
                f"--class {item!r}: expected [TABLE.]COLUMN=CLASS, CLASS one of {', '.join(CLASSES)}",
                code=INIT_ARGS,
            )
        matches = [
            (t.name, c.name)
            for t in tables.values()
            if not dot or t.name == table
            for c in t.columns
            if c.name == column
        ]
        if not matches:
            raise ConfigError(f"--class {item!r}: no such column in the files", code=INIT_ARGS)
        for match in matches:
            if out.get(match, cls) != cls:
                raise ConfigError(
                    f"--class {item!r}: {match[0]}.{match[1]} is given two classes ({out[match]} and {cls})",
                    code=INIT_ARGS,
                    hint="give each column one class",
                )
            out[match] = cls
    return out


def catalog_text(
    federation: str,
    addresses: dict[str, str],
    keys: dict[str, tuple[str, str]],
    tables: dict[str, InferredTable],
    classes: dict[tuple[str, str], str],
    he_format: str,
    *,
    narrow: bool = False,
) -> str:
    """The catalog, with a comment on every decision left to the operator (``narrow``: declare each number
    column with the narrowest type holding the files' values, saying what the files hold)."""
    lines = [
        "# The federation catalog, written by `hpf init` from the regions' files. Every party holds a copy.",
        "# Before asking anything but COUNT(*): give each column its class (identifier | public | sensitive |",
        "# commercial); a column without one is refused by every policy. A `domain` makes a column groupable",
        "# (the suggested ones list the values seen in the files: a domain publishes them to every party);",
        "# differentially private roles need `bounds` on summed columns and a table's `contribution`. These",
        "# comments are in the file every party holds, the coordinator too: delete the suggestions you do not",
        "# take before you hand it out.",
        "# Check it with `hpf catalog check`; every node and the coordinator read it at start.",
        f"federation: {federation}",
        f"he_format: {he_format}",
        "nodes:",
    ]
    for node_id, address in addresses.items():
        audit_key, agreement_key = keys[node_id]
        lines.append(
            f'  - {{id: {node_id}, address: "{address}", audit_key: "{audit_key}", agreement_key: "{agreement_key}"}}'
        )
    lines.append("tables:")
    for table in tables.values():
        lines += [f"  {table.name}:", "    columns:"]
        for c in table.columns:
            assert c.type is not None
            cls = classes.get((table.name, c.name))
            declared = c.narrowest if narrow and c.narrowest else c.type
            lines += [
                f"      {c.name}:",
                f'        type: "{declared}"' if "(" in declared else f"        type: {declared}",
            ]
            if c.narrowest and narrow:
                lines[-1] += f"   # the files hold {c.type}; a node refuses a file with a value this type cannot hold"
            elif c.narrowest and c.two_valued:
                lines[-1] += f"   # {c.narrowest} holds every value in the files"
            elif c.narrowest:
                lines[-1] += f"   # {c.narrowest} holds the bounds below: declare it to sum products of this column"
            lines.append(
                f"        class: {cls}"
                if cls
                else "        # class: TODO   (identifier | public | sensitive | commercial)"
            )
            if c.extremes is not None and c.two_valued:
                lines.append(
                    "        # no bounds suggested: the files hold two values of it, a flag. A product with a flag is "
                    "the sum of one value's rows, which a minimum group size never sees: filter on it instead "
                    "(bounds holding more than two values would let such a product pass as one of quantities)"
                )
            elif c.extremes is not None:
                lo, hi = suggested_bounds(c.extremes, declared)
                lines.append(
                    f"        # bounds: [{lo}, {hi}]   # the files' values lie within: uncomment to sum products of "
                    "it, and for differential privacy"
                )
            if c.domain_values is not None:
                values = yaml.safe_dump(c.domain_values, default_flow_style=True, width=10_000).strip()
                lines.append(
                    f"        # domain: {{values: {values}}}   # the values in the files; uncomment to group by it"
                )
            if c.date_years is not None:
                first, last = c.date_years
                lines.append(
                    f'        # domain: {{range: ["{first}-01-01", "{last}-12-31"]}}   # uncomment to group by it'
                )
        for column, why in table.left_out.items():
            lines.append(f"      # {_shown(column)}: left out, {_shown(why)}")
        lines.append(
            "    # contribution: {person: COLUMN, max_rows: N, max_regions: N}   # TODO for differential privacy"
        )
    return "\n".join(lines) + "\n"


def _shown(text: str) -> str:
    """Text of the files (a column name, a type) as it may stand in a comment of the catalog: as it is where it
    is plain, else quoted with every quote, control character and line break escaped, so it can never end the
    comment and write YAML of its own.

    >>> _shown("l_extra"), _shown('zz\\n  extra: {c: 1}'), _shown("a\\u2028b")
    ('l_extra', '"zz\\\\n  extra: {c: 1}"', '"a\\\\u2028b"')
    """
    quoted = json.dumps(text, ensure_ascii=False)
    quoted = "".join(f"\\u{ord(c):04x}" if c in "\x85\u2028\u2029" or not c.isprintable() else c for c in quoted)
    return text if quoted[1:-1] == text else quoted
