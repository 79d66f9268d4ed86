"""`hpf init`: a federation for your own Parquet or CSV files, ready to start on this machine."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from hpf.cli.errors import cli_errors

HELP = """Write a federation for your own files: catalog, certificates, node and coordinator configs, a policy and
a client profile, then print the commands that start it.

Give each region's files with --source REGION=PATH (the table is named after the file) or
REGION:TABLE=PATH; a glob reads several files as one table. Column types are read from the files; column
classes are left for you to decide (--class, or in the catalog): a column without a class is refused by every
policy, so until then only COUNT(*) can be asked."""


def init(
    folder: Annotated[Path, typer.Argument(help="Folder to write the federation into")],
    source: Annotated[
        list[str], typer.Option("--source", "-s", help="REGION=PATH or REGION:TABLE=PATH (repeat; 3+ regions)")
    ],
    federation: Annotated[
        str, typer.Option("--federation", help="The federation's name (a DNS name)")
    ] = "my-federation",
    person: Annotated[
        list[str] | None,
        typer.Option("--person", help="NAME:ROLE[:HOME] to issue a certificate and profile for (default you:operator)"),
    ] = None,
    classes: Annotated[
        list[str] | None, typer.Option("--class", help="[TABLE.]COLUMN=CLASS (identifier|public|sensitive|commercial)")
    ] = None,
    narrow: Annotated[
        bool,
        typer.Option("--narrow-types", help="Declare number columns with the narrowest type holding the files' values"),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Write over a federation this folder holds")] = False,
) -> None:
    from hpf.cli.init_sources import Source
    from hpf.cli.pki import parse_person
    from hpf.cli.scaffold import scaffold
    from hpf.demo.lookups import hpf_command

    done = scaffold(
        folder,
        federation,
        [Source.parse(s) for s in source],
        [parse_person(p) for p in person or []],
        classes or [],
        force=force,
        narrow=narrow,
        progress=lambda line: typer.echo(line, err=True),
    )
    hpf = hpf_command()
    first_table = next(iter(done.tables))
    profile = next(iter(done.profiles.values()))
    lines = ["start every node, then the coordinator (each in its own terminal, or in the background as here):"]
    lines += [f"  {hpf} node serve --config {shlex.quote(str(done.node_config(r)))} &" for r in done.regions]
    lines += [f"  {hpf} coordinator serve --config {shlex.quote(str(done.coordinator_config))} &"]
    lines += [
        "then ask:",
        f'  {hpf} query -p {shlex.quote(str(profile))} "SELECT COUNT(*) FROM {first_table}"',
    ]
    if done.unclassified:
        lines += [
            f"{done.unclassified} column(s) have no class yet (# TODO class in {done.catalog}): every policy refuses "
            "them until you give each one, then restart the nodes and the coordinator",
        ]
    typer.echo("\n".join(lines))


def register(app: typer.Typer) -> None:
    app.command("init", help=HELP)(cli_errors(init))
