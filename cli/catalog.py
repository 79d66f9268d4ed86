"""`hpf catalog check FILE`: validate a federation catalog before anyone relies on it."""

from __future__ import annotations

from pathlib import Path

import typer

from hpf.cli.errors import cli_errors

catalog_app = typer.Typer(help="Federation catalogs.", no_args_is_help=True)


@catalog_app.command("check")
@cli_errors
def check(path: Path = typer.Argument(..., help="Catalog file (federation.yaml)")) -> None:
    """Validate a catalog; errors name the file, the field and the fix."""
    from hpf.federation.catalog import load_catalog

    catalog = load_catalog(path)
    groupable = sum(1 for t in catalog.tables.values() for c in t.columns.values() if c.domain is not None)
    typer.echo(
        f"{path}: ok: {len(catalog.nodes)} node(s), {len(catalog.tables)} table(s), {groupable} groupable column(s)"
    )
    unclassified = [
        f"{t}.{c}" for t, spec in catalog.tables.items() for c, col in spec.columns.items() if col.column_class is None
    ]
    if unclassified:
        named = ", ".join(unclassified[:8]) + (", ..." if len(unclassified) > 8 else "")
        typer.echo(
            f"note: {len(unclassified)} column(s) have no class yet ({named}): every node's policy refuses them "
            "(POLICY_COLUMN_UNCLASSIFIED) until an operator sets their class: (identifier, public, sensitive or "
            "commercial)"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(catalog_app, name="catalog")
