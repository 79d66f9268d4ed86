"""How the demo shows what it asks: the command's own tables, handed in (the demo never imports the command)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hpf.client.answers import ExplainAnswer, LookupAnswer, QueryAnswer
from hpf.federation.plan import Plan


class TextTable(Protocol):
    """Columns and rows as a plain-text table, the columns at ``right_aligned`` aligned right."""

    def __call__(
        self, columns: Sequence[str], rows: Iterable[Sequence[str]], *, right_aligned: Collection[int] = ()
    ) -> str: ...


@dataclass(frozen=True)
class Renderers:
    """What `hpf query`, `hpf query --explain` and `hpf lookup` print, each as its table."""

    answer: Callable[[QueryAnswer], str]
    explain: Callable[[Plan, ExplainAnswer], str]
    lookup: Callable[[LookupAnswer], str]
    table: TextTable
