"""`hpf node health` and `hpf coordinator health`: one health check of the party's running server, on one line.

A container's HEALTHCHECK runs it, so it is quick (``--timeout``, 3 s by default) and loads only the config, gRPC
and the certificate files: it dials the party's own port over mutual TLS with the party's own certificate, and
checks the server's certificate against the party's own server name (:mod:`federation.health_check`). It prints
SERVING, NOT_SERVING, NOT_RUNNING or UNREACHABLE and exits 0 only for SERVING.
"""

from __future__ import annotations

from pathlib import Path

import typer

from hpf.cli.errors import cli_errors
from hpf.cli.serve import coordinator_app, node_app

TIMEOUT = typer.Option(3.0, "--timeout", help="Seconds to wait for the server's answer", min=0.1, max=60.0)
ADDRESS = typer.Option(None, "--address", help="Dial HOST:PORT instead of the config's 'listen:'")


@cli_errors
def node_health(
    config: Path = typer.Option(..., "--config", "-c", help="Node configuration (node.yaml)"),
    timeout: float = TIMEOUT,
    address: str | None = ADDRESS,
) -> None:
    """Check that the node serving this configuration is SERVING (exit 0), else exit 1."""
    from hpf.federation.health_check import NODE_SERVICE, check_health, local_address
    from hpf.federation.trust.channels import node_target
    from hpf.node.config import load_node_config

    node = load_node_config(config)
    where = address or local_address(node.listen)
    health = check_health(where, node.tls, node_target(node.tls, node.node_id), NODE_SERVICE, timeout)
    typer.echo(health.line())
    raise typer.Exit(0 if health.serving else 1)


@cli_errors
def coordinator_health(
    config: Path = typer.Option(..., "--config", "-c", help="Coordinator configuration (coordinator.yaml)"),
    timeout: float = TIMEOUT,
    address: str | None = ADDRESS,
) -> None:
    """Check that the coordinator serving this configuration is SERVING (exit 0), else exit 1."""
    from hpf.coordinator.config import load_coordinator_config
    from hpf.federation.health_check import COORDINATOR_SERVICE, check_health, local_address
    from hpf.federation.trust.channels import coordinator_target

    coordinator = load_coordinator_config(config)
    where = address or local_address(coordinator.listen)
    health = check_health(where, coordinator.tls, coordinator_target(coordinator.tls), COORDINATOR_SERVICE, timeout)
    typer.echo(health.line())
    raise typer.Exit(0 if health.serving else 1)


def register(app: typer.Typer) -> None:
    node_app.command("health")(node_health)
    coordinator_app.command("health")(coordinator_health)
