"""The runnable examples in the docstrings stay true: every module of the package that has one, found by walking
the package (so a module split or moved keeps its examples running), and the test oracles'."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

ROOMS = ("federation", "policies", "client", "node", "coordinator", "demo", "cli")
SKIPPED = ("generated", "__main__")  # generated stubs; ``python -m hpf.cli`` would run the command
ORACLES = ["group_size_oracle"]


def _modules_with_examples() -> list[str]:
    names = []
    for room in ROOMS:  # each room's own folder: ``hpf`` itself is a namespace an editable install maps
        package = importlib.import_module(f"hpf.{room}")
        for info in [*pkgutil.walk_packages(package.__path__, f"hpf.{room}."), package.__spec__]:
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
    assert len(MODULES) > 40


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
