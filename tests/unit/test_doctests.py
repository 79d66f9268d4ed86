"""The runnable examples in the planner's and codec's docstrings stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "hpf.federation.crypto.limb_codec",
    "hpf.federation.crypto.slot_codec",
    "group_size_oracle",
    "hpf.federation.lru",
    "hpf.federation.privacy.fixed_decimal",
    "hpf.federation.privacy.dp_plan",
    "hpf.federation.planner.shape",
    "hpf.federation.planner.domains",
    "hpf.federation.planner.split",
    "hpf.federation.planner.kinds",
    "hpf.policies.cross_checks",
    "hpf.federation.hpf_schema",
    "hpf.federation.person_id",
    "hpf.federation.trust.server_names",
    "hpf.federation.trust.certificates",
    "hpf.federation.trust.ca_record",
    "hpf.demo.synth",
    "hpf.demo.synth.timeline",
    "hpf.federation.trust.verdicts",
    "hpf.federation.config_files",
    "hpf.node.backends.type_check",
    "hpf.federation.crypto.he",
    "hpf.federation.catalog_parties",
    "hpf.federation.catalog_keys",
    "hpf.cli.output",
    "hpf.cli.init_column_types",
    "hpf.cli.init_catalog",
    "hpf.node.backends.duckdb_backend",
    "hpf.federation.engine",
    "hpf.federation.errors",
    "hpf.federation.error_codes",
    "hpf.federation.trust.envelope",
    "hpf.federation.consent.tokens",
    "hpf.federation.consent.verifier",
    "hpf.federation.consent.revocations",
    "hpf.federation.consent.issuer",
    "hpf.federation.audit.merkle",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
