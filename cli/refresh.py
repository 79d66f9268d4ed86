"""`hpf node refresh`: a running node computes its per-person lookup facts now, not at its next scheduled time.

A node on PostgreSQL computes them every ``lookup_facts.refresh_s`` seconds (see :mod:`node.lookup_refresh`);
after a bulk load, its operator runs on the node's host::

    hpf node refresh --config node.yaml

which asks the node serving that configuration's state directory, waits for it, and prints how many people the
facts are now about and how long they took.
"""

from __future__ import annotations

from pathlib import Path

import typer

from hpf.cli.errors import cli_errors
from hpf.cli.serve import node_app


@cli_errors
def node_refresh(
    config: Path = typer.Option(..., "--config", "-c", help="Node configuration (node.yaml)"),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds to wait for the node to finish", min=1.0),
) -> None:
    """Have the running node compute its lookup facts again now (a node on PostgreSQL does on a schedule)."""
    from hpf.federation.errors import error_for_code
    from hpf.node.config import load_node_config
    from hpf.node.lookup_refresh import ask_refresh

    node = load_node_config(config)
    say = lambda msg: typer.echo(f"node {node.node_id}: {msg}", err=True)  # noqa: E731
    say("asking the running node to compute its lookup facts again")
    outcome = ask_refresh(node.state_dir, timeout, say)
    if not outcome.ok:
        raise error_for_code(
            outcome.code or "NODE_EXECUTION_FAILED",
            "the node could not compute its lookup facts; the earlier ones stay in force",
            hint="see the node's log; a database that cannot be reached makes the region unwell until it can",
        )
    typer.echo(f"node {node.node_id}: lookup facts computed for {outcome.people:,} people in {outcome.ms:,.0f} ms")


def register(app: typer.Typer) -> None:
    node_app.command("refresh")(node_refresh)
