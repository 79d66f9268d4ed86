"""The runnable examples in the planner's and codec's docstrings stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "federation.limb_codec",
    "federation.slot_codec",
    "group_size_oracle",
    "federation.lru",
    "federation.fixed_decimal",
    "federation.dp_plan",
    "federation.planner.shape",
    "federation.planner.domains",
    "federation.planner.split",
    "federation.hpf_schema",
    "federation.person_id",
    "federation.pki",
    "federation.ca_record",
    "federation.synth",
    "federation.synth.timeline",
    "federation.verdicts",
    "federation.config_files",
    "node.backends.type_check",
    "federation.he",
    "federation.catalog",
    "federation.catalog_keys",
    "cli.output",
    "cli.scaffold",
    "node.backends.duckdb_backend",
    "federation.engine",
    "federation.errors",
    "federation.error_codes",
    "federation.envelope",
    "federation.consent",
    "federation.consent_revocations",
    "federation.consent_issuer",
    "federation.merkle",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
