"""Modules of at most 400 lines and functions of at most 80, outside tests and generated code."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("federation", "node", "coordinator", "cli", "demo", "policies", "client")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


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


def test_no_module_is_over_the_limit() -> None:
    modules, _ = _sizes()
    long = {name: lines for name, lines in modules.items() if lines > MAX_MODULE_LINES}
    assert long == {}  # split it by concern: a module of at most 400 lines


def test_no_function_is_over_the_limit() -> None:
    _, functions = _sizes()
    long = {name: lines for name, lines in functions.items() if lines > MAX_FUNCTION_LINES}
    assert long == {}  # split it into named steps: a function of at most 80 lines
