"""`hpf node serve` and `hpf coordinator serve`: run one party until interrupted."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import typer

from cli.errors import cli_errors
from coordinator.config import load_coordinator_config
from coordinator.server import start_coordinator
from node.config import load_node_config
from node.server import start_node

node_app = typer.Typer(help="Run a regional node.", no_args_is_help=True)
coordinator_app = typer.Typer(help="Run the federation coordinator.", no_args_is_help=True)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


@node_app.command("serve")
@cli_errors
def serve_node(
    config: Path = typer.Option(..., "--config", "-c", help="Node configuration (node.yaml)"),
    listen: str = typer.Option(None, "--listen", help="Override the listen address"),
    insecure: bool = typer.Option(False, "--insecure", help="Plaintext without TLS: local development only"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Serve this region's partial answers until interrupted."""
    _logging(verbose)
    node = start_node(load_node_config(config, insecure=insecure), listen)
    typer.echo(f"node {node.node_id} serving on port {node.port}", err=True)
    _wait_for_signal()
    node.stop(2.0)


@coordinator_app.command("serve")
@cli_errors
def serve_coordinator(
    config: Path = typer.Option(..., "--config", "-c", help="Coordinator configuration (coordinator.yaml)"),
    listen: str = typer.Option(None, "--listen", help="Override the listen address"),
    insecure: bool = typer.Option(False, "--insecure", help="Plaintext without TLS: local development only"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Plan, fan out and sum federated queries until interrupted."""
    _logging(verbose)
    coordinator = start_coordinator(load_coordinator_config(config, insecure=insecure), listen)
    typer.echo(f"coordinator serving on port {coordinator.port}", err=True)
    _wait_for_signal()
    coordinator.stop(2.0)


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
    app.add_typer(coordinator_app, name="coordinator")
