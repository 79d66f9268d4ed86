"""The runnable examples in the docstrings stay true: every module of the package that has one, found by walking
the package (so a module split or moved keeps its examples running), and the test oracles'."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import hpf

SKIPPED = ("generated", "__main__")  # generated stubs; ``python -m hpf.cli`` would run the command
ORACLES = ["group_size_oracle"]


def _modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(hpf.__path__, "hpf."):
        if any(part in SKIPPED for part in info.name.split(".")):
            continue
        module = importlib.import_module(info.name)
        if any(test.examples for test in doctest.DocTestFinder().find(module)):
            names.append(info.name)
    return names


MODULES = _modules_with_examples() + ORACLES


def test_the_walk_finds_the_examples_of_every_room() -> None:
    rooms = {name.split(".")[1] for name in MODULES if name.startswith("hpf.")}
    assert {"federation", "policies", "node", "cli", "demo"} <= rooms


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
