"""Deterministic synthetic housing provident fund data for a federation of Yangtze River Delta nodes.

>>> from pathlib import Path
>>> nodes = ["shanghai", "hangzhou"]
>>> report = generate_federation(Path("data"), nodes, rows=20_000, seed=1)  # doctest: +SKIP
>>> report.planted  # the people with active loans in two cities  # doctest: +SKIP

See :mod:`demo.synth.registry` for how people, accounts and loans are planned.
"""

from hpf.demo.synth.generator import (
    FederationReport,
    NodeReport,
    PlantedDuplicate,
    generate_federation,
    generate_node,
    planted_duplicate_loans,
)
from hpf.demo.synth.registry import MIN_ROWS

__all__ = [
    "MIN_ROWS",
    "FederationReport",
    "NodeReport",
    "PlantedDuplicate",
    "generate_federation",
    "generate_node",
    "planted_duplicate_loans",
]
