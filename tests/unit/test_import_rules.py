"""Which package may import which, read from the source with the ast module.

The seven folders install as one package, ``hpf``: ``hpf.federation`` and ``hpf.policies`` are shared by every
party, ``hpf.client`` is the client library, ``hpf.node`` and ``hpf.coordinator`` are the two servers, ``hpf.demo``
is the synthetic federation and the demo that the command, the benchmarks and the tests share, ``hpf.cli`` is the
command that starts them all. No package imports upward: the shared packages import no party, the client library
only the shared ones, the servers never import each other, the client library nor the command, the demo may use
every party but never the command (the command may import the demo), and every import of the project's own code
names it by its installed name (``hpf.``), never by a folder name that would collide in site-packages. (bench/ and
tests/ may import anything.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("federation", "policies", "client", "node", "coordinator", "demo", "cli")
# what each package may import of the others (itself always)
ALLOWED = {
    "federation": {"federation"},
    "policies": {"federation", "policies"},
    "client": {"federation", "policies", "client"},
    "node": {"federation", "policies", "node"},
    "coordinator": {"federation", "policies", "coordinator"},
    "demo": {"federation", "policies", "client", "node", "coordinator", "demo"},
    "cli": set(PACKAGES),
}


def _imports(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """Every module the file ``path`` imports (at any depth, in functions too), with its line; relative imports
    resolved from where ``path`` is. ``source``: its text, if not read from ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source, filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = path.relative_to(ROOT).with_suffix("").parts[: -node.level]
                found.append((node.lineno, ".".join(["hpf", *parts, *([node.module] if node.module else [])])))
            elif node.module is not None:
                found.append((node.lineno, node.module))
    return found


def _sources(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "generated" not in p.parts)


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_what_its_place_allows(package: str) -> None:
    wrong = []
    for path in _sources(package):
        for line, module in _imports(path):
            parts = module.split(".")
            if parts[0] in PACKAGES:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {module} (by its folder name; import hpf.{module})")
            elif parts[0] == "hpf" and len(parts) > 1 and parts[1] not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {module} ({package} may not import {parts[1]})")
    assert wrong == []


@pytest.mark.parametrize("folder", ["bench", "scripts", "tests"])
def test_bench_scripts_and_tests_import_the_project_by_its_installed_name(folder: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sorted((ROOT / folder).rglob("*.py"))
        for line, module in _imports(path)
        if module.split(".")[0] in PACKAGES
    ]
    assert wrong == []


def test_the_rules_see_the_forms_an_upward_import_can_take() -> None:
    """The check itself: plain, from, nested in a function, and relative imports are all read."""
    source = (
        "import hpf.node.server\n"
        "from hpf.coordinator import fanout\n"
        "def f():\n    from hpf.cli import app\n"
        "from ..node import handler\n"
        "import federation.errors\n"
    )
    found = {m for _, m in _imports(ROOT / "federation" / "planner" / "probe.py", source)}
    assert found == {"hpf.node.server", "hpf.coordinator", "hpf.cli", "hpf.federation.node", "federation.errors"}


@pytest.mark.parametrize("package", PACKAGES)
def test_docstring_examples_import_the_project_by_its_installed_name(package: str) -> None:
    """A docstring's example runs as code: ``>>> from federation.plan import ...`` works only where the source
    folder happens to be on the path, and names a module that collides in site-packages."""
    wrong = []
    for path in _sources(package):
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = text.strip().removeprefix(">>> ").removeprefix("... ")
            if text.strip().startswith((">>> ", "... ")) and code.startswith(("from ", "import ")):
                module = code.split()[1]
                if module.split(".")[0] in PACKAGES:
                    wrong.append(f"{path.relative_to(ROOT)}:{number}: {module}")
    assert wrong == []
