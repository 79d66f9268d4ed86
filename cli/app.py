"""The `hpf` command: this module only registers verbs and groups.

Registering a verb imports its cli module, so a cli module imports only typer, rich, the standard library, the
error classes (federation.errors) and policies.DEFAULT_POLICY at module level, and each command imports what it
runs in its own body. `hpf --help` thus loads none of the libraries the verbs run, and `hpf VERB ...` registers
the module of VERB alone (tests/unit/test_cli_imports.py guards both).
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

app = typer.Typer(
    name="hpf",
    help="Federated, encrypted queries across housing provident fund centres.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# every verb and group, in the order `hpf --help` lists them, and the cli modules that register it and its commands
VERBS: dict[str, tuple[str, ...]] = {
    "init": ("init",),
    "query": ("query",),
    "lookup": ("lookup",),
    "screen": ("lookup",),
    "demo": ("demo",),
    "version": ("version",),
    "node": ("serve", "keys", "refresh", "backup", "doctor", "health"),
    "coordinator": ("serve", "health"),
    "pki": ("pki",),
    "catalog": ("catalog", "keys"),
    "policy": ("policy",),
    "audit": ("audit",),
    "consent": ("consent",),
}


@app.callback()
def _verbs() -> None:
    """`hpf` always takes a verb, even when only one verb's module is registered."""


def _register(verb: str | None = None) -> None:
    """Register the module of ``verb``, or of every verb when ``verb`` names none (`hpf --help`, a typo)."""
    modules = VERBS[verb] if verb in VERBS else dict.fromkeys(m for ms in VERBS.values() for m in ms)
    for name in modules:
        importlib.import_module(f"hpf.cli.{name}").register(app)


def main() -> None:
    # no party does floating-point linear algebra, so numpy's BLAS needs no thread pool, whose start costs every
    # command that loads numpy tens of milliseconds of CPU (an OPENBLAS_NUM_THREADS of the caller's own wins)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    _register(sys.argv[1] if len(sys.argv) > 1 else None)
    app()
