"""What a policy refusal may say: a code the client gave is quoted only when it looks like one.

The checks (:mod:`policies.engine`, :mod:`policies.query_stages`, :mod:`policies.lookup_stages`) name tables,
columns, roles and purposes in their messages, never a value or a literal of the question.
"""

from __future__ import annotations

import re

from hpf.federation.catalog import ColumnClass

_SHOWABLE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # matched whole


def show(value: str) -> str:
    """A client-given code, quoted if it looks like a code, else not echoed."""
    return repr(value) if _SHOWABLE.fullmatch(value) else "given"


def unclassified_hint(table: str, column: str) -> str:
    """How an operator lets a policy judge a column the catalog gives no class."""
    return (
        f"an operator must classify it first: set class: (one of {', '.join(c.value for c in ColumnClass)}) "
        f"for tables.{table}.columns.{column} in the catalog every party holds"
    )
