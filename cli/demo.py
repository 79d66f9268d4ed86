"""`hpf demo`: a whole federation on this machine, as real processes with mutual TLS.

Generates the synthetic Yangtze River Delta data (if absent), issues certificates, starts N nodes and a
coordinator, writes ``DIR/client.yaml`` and prints the exact `hpf query` and `hpf lookup` commands to try.
``--once`` runs a few example queries, person lookups and a screening, checks each against DuckDB over the
pooled files (and the screening against the people planted with loans in two cities), prints them and exits
(the examples: :mod:`cli.demo_examples`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hpf.cli.errors import cli_errors
from hpf.federation.errors import ConfigError
from hpf.policies import DEFAULT_POLICY

if TYPE_CHECKING:
    from hpf.cli.demo_federation import DemoLayout


@cli_errors
def demo(
    nodes: int = typer.Option(4, "--nodes", "-n", help="How many regions: 3 to 41 (the first N of the 41 cities)"),
    rows: int = typer.Option(200_000, "--rows", "-r", help="Deposit rows per node"),
    seed: int = typer.Option(2026, "--seed", "-s", help="Seed of the synthetic data"),
    data: Path = typer.Option(Path("demo-data"), "--data", "-d", help="Where data, certificates and configs go"),
    once: bool = typer.Option(False, "--once", help="Run example queries, print them and exit"),
    base_port: int = typer.Option(0, "--base-port", help="First port to use (0: any free ports)"),
) -> None:
    """Run a local federation of N regional nodes and a coordinator, with mutual TLS."""
    from hpf.cli.demo_federation import layout_for, only_demo
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
    layout = layout_for(data, nodes)
    say = lambda msg: typer.echo(msg, err=True)  # noqa: E731
    with only_demo(layout.data):
        _run_demo(layout, rows, seed, base_port, once, say)


def _run_demo(layout: DemoLayout, rows: int, seed: int, base_port: int, once: bool, say: Callable[[str], None]) -> None:
    from hpf.cli.demo_examples import EXAMPLES, run_examples
    from hpf.cli.demo_federation import ensure_data, running_parties, write_configs
    from hpf.cli.demo_lookups import ready_lines, run_lookups

    ensure_data(layout, rows, seed, say)
    write_configs(layout, base_port)
    with running_parties(layout, say):
        if once:
            ok = run_examples(layout)
            ok &= run_lookups(layout, rows, seed)
            if not ok:
                raise typer.Exit(1)
            return
        for line in ready_lines(layout, rows, seed, EXAMPLES[0].sql):
            typer.echo(line, err=False)
        typer.echo("serving; press Ctrl-C to stop", err=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        typer.echo("stopping", err=True)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
