"""Modules of at most 400 lines and functions of at most 80, outside tests and generated code.

The modules and functions listed below are still over and are being split; the list may only shrink: a new
module or function over the limit fails, and so does one listed that is no longer over (take it off the list).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("federation", "node", "coordinator", "cli", "policies", "client")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
# still over the limits: to be split
LONG_MODULES = {
    "cli/audit.py",
    "cli/scaffold.py",
    "client/lookups.py",
    "coordinator/fanout.py",
    "federation/audit/log.py",
    "federation/audit/verify.py",
    "federation/catalog.py",
    "federation/consent/tokens.py",
    "federation/crypto/lookup_codec.py",
    "federation/crypto/sealing.py",
    "federation/planner/totality.py",
    "federation/trust/pki.py",
    "federation/trust/tls.py",
    "policies/engine.py",
    "policies/loader.py",
    "policies/model.py",
}
LONG_FUNCTIONS = {
    "cli/audit.py::receipts_command",
    "cli/audit.py::verify",
    "cli/demo_examples.py::run_examples",
    "cli/demo_lookups.py::run_lookups",
    "cli/scaffold.py::scaffold",
    "client/federation_client.py::query",
    "client/lookups.py::_ask",
    "client/lookups.py::screen",
    "federation/planner/split.py::split_query",
    "federation/planner/totality.py::_kind",
    "policies/engine.py::check_lookup",
}


def _sources() -> list[Path]:
    return sorted(
        p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "generated" not in p.relative_to(ROOT).parts
    )


def _sizes() -> tuple[dict[str, int], dict[str, int]]:
    modules, functions = {}, {}
    for path in _sources():
        name = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        modules[name] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                key = f"{name}::{node.name}"
                functions[key] = max(functions.get(key, 0), node.end_lineno - node.lineno + 1)
    return modules, functions


def test_no_module_grows_past_the_limit_and_the_list_of_long_ones_only_shrinks() -> None:
    modules, _ = _sizes()
    long = {name for name, lines in modules.items() if lines > MAX_MODULE_LINES}
    assert sorted(long - LONG_MODULES) == []  # split it: a module of at most 400 lines
    assert sorted(LONG_MODULES - long) == []  # no longer long: take it off the list


def test_no_function_grows_past_the_limit_and_the_list_of_long_ones_only_shrinks() -> None:
    _, functions = _sizes()
    long = {name for name, lines in functions.items() if lines > MAX_FUNCTION_LINES}
    assert sorted(long - LONG_FUNCTIONS) == []  # split it: a function of at most 80 lines
    assert sorted(LONG_FUNCTIONS - long) == []  # no longer long: take it off the list
