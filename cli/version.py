"""`hpf version`: this installation's release and the HE wire format it reads and writes."""

from __future__ import annotations

import typer


def version() -> None:
    """Print the release and the HE wire format (the catalog's `he_format` must name this one)."""
    from importlib.metadata import version as installed

    from hpf.federation.crypto.he import EXPECTED_HE_FORMAT, HE_FORMAT

    typer.echo(f"hpf-federation {installed('hpf-federation')}")
    typer.echo(f"HE wire format: {HE_FORMAT}")
    if HE_FORMAT != EXPECTED_HE_FORMAT:
        typer.echo(f"warning: this release is built for {EXPECTED_HE_FORMAT}: reinstall it", err=True)


def register(app: typer.Typer) -> None:
    app.command("version")(version)
