"""`hpf --help` and every `hpf VERB --help` load typer and the cli modules, not the libraries the verbs run; and
`hpf VERB ...` registers the module of VERB alone.

A structural guard of the command's start-up (its timings live in bench/cli_bench.py): the cli modules import
typer, rich and the standard library at module level, and each command imports what it runs in its own body.
"""

from __future__ import annotations

import subprocess
import sys

import hpf.cli.app
import hpf.cli.audit
import hpf.cli.lookup
import hpf.client.lookups
import hpf.federation.crypto.sealing

# what a command may load only once it runs: each costs tens of milliseconds to import
HEAVY = ("tenseal", "grpc", "duckdb", "sqlglot", "cryptography", "pyarrow", "numpy", "yaml", "google", "pydantic")
# typer itself loads pydantic to read the --help flag of `hpf` when a verb is given (`hpf VERB --help`, and every
# `hpf VERB ...`), which this code cannot change: only `hpf --help` and registering the verbs are spared it
LOADED_BY_TYPER = ("pydantic",)

EVERY_HELP = """
import contextlib, io, sys

import typer.main

import hpf.cli.app

hpf.cli.app._register()
group = typer.main.get_command(hpf.cli.app.app)


def paths(command, prefix):
    yield prefix
    for name, sub in getattr(command, "commands", {}).items():
        yield from paths(sub, [*prefix, name])


with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
    group.main(["--help"], prog_name="hpf")
print(" ".join(sorted(sys.modules)))
shown = 0
for path in paths(group, []):
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        group.main([*path, "--help"], prog_name="hpf")
    assert "Usage:" in out.getvalue(), path
    shown += 1
print(shown)
print(" ".join(sorted(sys.modules)))
"""


def _run(code: str) -> list[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()


def _packages(line: str) -> set[str]:
    """The top-level packages among the modules named on ``line``."""
    return {name.split(".")[0] for name in line.split()}


def test_registering_the_verbs_loads_no_library_they_run() -> None:
    (line,) = _run("import sys; import hpf.cli.app; hpf.cli.app._register(); print(' '.join(sorted(sys.modules)))")
    verbs = {"hpf.cli.query", "hpf.cli.lookup", "hpf.cli.audit", "hpf.cli.demo"}
    assert verbs <= set(line.split()) and "typer" in _packages(line)
    assert sorted(_packages(line) & set(HEAVY)) == []


def test_help_loads_no_library_the_verbs_run() -> None:
    """`hpf --help`, then the help of every verb and group (found in the command tree, so a new verb is covered)."""
    after_hpf_help, shown, after_every_help = _run(EVERY_HELP)
    assert int(shown) >= 20  # hpf, its verbs, its groups and theirs
    assert sorted(_packages(after_hpf_help) & set(HEAVY)) == []
    assert sorted(_packages(after_every_help) & set(HEAVY) - set(LOADED_BY_TYPER)) == []


def test_the_verbs_map_names_every_verb_in_order() -> None:
    """`hpf VERB` registers the module VERBS names for it: the map must name every verb and group, as ordered."""
    code = (
        "import typer.main, hpf.cli.app; hpf.cli.app._register(); "
        "print(*typer.main.get_command(hpf.cli.app.app).commands)"
    )
    (line,) = _run(code)
    assert line.split() == list(hpf.cli.app.VERBS)


def test_a_verb_registers_its_own_module_only() -> None:
    code = (
        "import sys, hpf.cli.app; hpf.cli.app._register('screen'); "
        "print(*sorted(m for m in sys.modules if m[:8] == 'hpf.cli.'))"
    )
    (line,) = _run(code)
    assert line.split() == ["hpf.cli.app", "hpf.cli.errors", "hpf.cli.lookup", "hpf.cli.output"]


def test_defaults_the_help_states_are_the_librarys() -> None:
    """Two defaults are written out in the cli modules so that their help need not load the library."""
    assert hpf.cli.lookup.DEFAULT_BATCH == hpf.client.lookups.LOOKUP_BATCH
    assert hpf.cli.audit.SUBJECT_KEY == hpf.federation.crypto.sealing.SUBJECT_KEY


def test_the_client_loads_the_planner_and_duckdb_only_when_it_needs_them() -> None:
    """A plan kept from before needs no planner (sqlglot, the binder's DuckDB), and a lookup's answer no finishing
    SQL (DuckDB): importing the client loads none of them."""
    (line,) = _run("import sys, hpf.client.federation_client; print(*sorted(sys.modules))")
    assert sorted(_packages(line) & {"sqlglot", "duckdb"}) == []
    assert not [m for m in line.split() if m.startswith(("hpf.federation.planner", "hpf.client.finish"))]
