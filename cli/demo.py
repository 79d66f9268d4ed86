"""`hpf demo`: a whole federation on this machine, as real processes with mutual TLS.

Generates the synthetic Yangtze River Delta data (if absent), issues certificates, starts N nodes and a
coordinator, writes ``DIR/client.yaml`` and prints the exact `hpf query` and `hpf lookup` commands to try.
``--backends duckdb,postgres`` puts every other region's tables in a PostgreSQL database the demo makes on the
server ``--postgres`` reaches, and drops when it stops (:mod:`demo.postgres`).
``--once`` runs a few example queries, person lookups and a screening, checks each against DuckDB over the
pooled files (and the screening against the people planted with loans in two cities), prints them and exits
(the examples: :mod:`demo.examples`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hpf.cli.errors import cli_errors
from hpf.federation.errors import ConfigError
from hpf.policies import DEFAULT_POLICY

if TYPE_CHECKING:
    from hpf.demo.launcher import Progress
    from hpf.demo.renderers import Renderers


@cli_errors
def demo(
    nodes: int = typer.Option(4, "--nodes", "-n", help="How many regions: 3 to 41 (the first N of the 41 cities)"),
    rows: int = typer.Option(200_000, "--rows", "-r", help="Deposit rows per node"),
    seed: int = typer.Option(2026, "--seed", "-s", help="Seed of the synthetic data"),
    data: Path = typer.Option(Path("demo-data"), "--data", "-d", help="Where data, certificates and configs go"),
    once: bool = typer.Option(False, "--once", help="Run example queries, print them and exit"),
    base_port: int = typer.Option(0, "--base-port", help="First port to use (0: any free ports)"),
    backends: str = typer.Option(
        "duckdb", "--backends", help="Comma list of duckdb, postgres, spark: region i takes the i-th in turn"
    ),
    postgres: str | None = typer.Option(
        None,
        "--postgres",
        help="Connection string of a PostgreSQL server where the demo may make its database, for regions on "
        "postgres (default: $HPF_DEMO_POSTGRES, else host=127.0.0.1 port=5432 user=postgres dbname=postgres)",
        show_default=False,
    ),
    volumes: bool = typer.Option(
        False,
        "--volumes",
        help="Lay DATA out one folder per party (ca, federation, coordinator, people, regions/ID/{data,state}), as "
        "the volumes of docker/compose.yaml; needs --base-port and --prepare or --check",
    ),
    prepare: bool = typer.Option(
        False, "--prepare", help="With --volumes: write every party's data, keys and configs, then exit"
    ),
    check: bool = typer.Option(
        False,
        "--check",
        help="With --volumes: run the checked examples and lookups against the federation serving from DATA "
        "(its containers), then exit",
    ),
) -> None:
    """Run a local federation of N regional nodes and a coordinator, with mutual TLS."""
    from hpf.demo.data_lock import only_demo
    from hpf.demo.launcher import layout_for
    from hpf.demo.postgres import parse_backends, postgres_dsn
    from hpf.demo.run import run_demo
    from hpf.federation.regions import REGIONS
    from hpf.policies.loader import load_policy

    if rows < 1_000:
        raise ConfigError("--rows must be at least 1000", code="DEMO_ARGS")
    fewest = load_policy(DEFAULT_POLICY).secure_aggregation.min_participants
    if not fewest <= nodes <= len(REGIONS):
        raise ConfigError(
            f"--nodes takes {fewest} to {len(REGIONS)}, not {nodes}: the demo has {len(REGIONS)} cities, and every "
            f"region of the default policy adds its masked answer only to sums over {fewest} or more regions "
            "(secure_aggregation.min_participants)",
            code="DEMO_ARGS",
        )
    say = lambda msg: typer.echo(msg, err=True)  # noqa: E731
    if volumes or prepare or check:
        if not volumes or prepare == check:
            raise ConfigError("--volumes takes one of --prepare and --check, and they take --volumes", code="DEMO_ARGS")
        if not _in_volumes(data, nodes, rows, seed, base_port, prepare, say):
            raise typer.Exit(1)
        return
    layout = layout_for(data, nodes, parse_backends(backends))
    with only_demo(layout.data):
        ok = run_demo(layout, rows, seed, base_port, once, say, _renderers(), postgres_dsn(postgres))
    if not ok:
        raise typer.Exit(1)


def _in_volumes(data: Path, nodes: int, rows: int, seed: int, base_port: int, prepare: bool, say: Progress) -> bool:
    """`hpf demo --volumes`: prepare the containers' folders, or check the federation they serve."""
    from hpf.demo.containers import prepare as write_volumes
    from hpf.demo.containers import prepared, volume_layout
    from hpf.demo.examples import run_examples
    from hpf.demo.lookups import run_lookups
    from hpf.federation.regions import first_regions

    layout = volume_layout(data, [r.node_id for r in first_regions(nodes)], base_port)
    if prepare:
        write_volumes(layout, rows, seed, say)
        return True
    rows, seed = prepared(layout)
    renderers = _renderers()
    # the people's container reads no region's state: each region's own container verifies its audit log
    ok = run_examples(layout, renderers, audit=False)
    return run_lookups(layout, rows, seed, renderers, audit=False) and ok


def _renderers() -> Renderers:
    """The tables `hpf query`, `hpf query --explain` and `hpf lookup` print, for the demo to show its answers."""
    from hpf.cli.explain_output import render_explain
    from hpf.cli.lookup import render_lookup
    from hpf.cli.output import render, text_table
    from hpf.demo.renderers import Renderers

    return Renderers(
        answer=lambda answer: render(answer, "table"),
        explain=lambda plan, reply: render_explain(plan, reply, "table"),
        lookup=lambda answer: render_lookup(answer, "table", None),
        table=text_table,
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
