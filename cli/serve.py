"""`hpf node serve` and `hpf coordinator serve`: run one party until interrupted."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import typer

from hpf.cli.errors import cli_errors

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


LISTEN = typer.Option(None, "--listen", help="Override the listen address")
INSECURE = typer.Option(False, "--insecure", help="Plaintext without TLS: local development only")
VERBOSE = typer.Option(False, "--verbose", "-v")


Started = tuple[str, int, Callable[[float], None]]  # the party's name, its port, and how to stop it (grace, s)


def _serve_command(config_help: str, start: Callable[[Path, bool, str | None], Started]) -> Callable[..., None]:
    """A party's `serve` command: start it from its config file (``start(config, insecure, listen)``), say where it
    listens, serve until SIGINT/SIGTERM, then stop gracefully."""

    @cli_errors
    def serve(
        config: Path = typer.Option(..., "--config", "-c", help=config_help),
        listen: str = LISTEN,
        insecure: bool = INSECURE,
        verbose: bool = VERBOSE,
    ) -> None:
        _logging(verbose)
        name, port, stop = start(config, insecure, listen)
        typer.echo(f"{name} serving on port {port}", err=True)
        _wait_for_signal()
        stop(2.0)

    return serve


def _start_node(config: Path, insecure: bool, listen: str | None) -> Started:
    from hpf.node.config import load_node_config
    from hpf.node.server import start_node

    node = start_node(load_node_config(config, insecure=insecure), listen)
    return f"node {node.node_id}", node.port, node.stop


def _start_coordinator(config: Path, insecure: bool, listen: str | None) -> Started:
    from hpf.coordinator.config import load_coordinator_config
    from hpf.coordinator.server import start_coordinator

    coordinator = start_coordinator(load_coordinator_config(config, insecure=insecure), listen)
    return "coordinator", coordinator.port, coordinator.stop


node_app.command("serve", help="Serve this region's partial answers until interrupted.")(
    _serve_command("Node configuration (node.yaml)", _start_node)
)
coordinator_app.command("serve", help="Plan, fan out and sum federated queries until interrupted.")(
    _serve_command("Coordinator configuration (coordinator.yaml)", _start_coordinator)
)


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
    app.add_typer(coordinator_app, name="coordinator")
