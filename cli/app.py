"""The `hpf` command: this module only registers verbs and groups."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="hpf",
    help="Federated, encrypted queries across housing provident fund centres.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from cli import audit, catalog, demo, init, keys, lookup, pki, policy, query, serve, version

    for module in (init, query, lookup, demo, serve, pki, catalog, keys, policy, audit, version):
        module.register(app)


def main() -> None:
    _register()
    app()
