"""`hpf node backup` and `hpf node restore`: a consistent copy of a node's state, and bringing it up on a new host
(:mod:`node.backup`, :mod:`node.restore`).

On the node's host, every few minutes (a cron job or a systemd timer), whether the node runs or not::

    hpf node backup /backups/north-20261206T2200Z --config node.yaml

and on a new host, with the node stopped and its state directory empty or absent::

    hpf node restore /backups/north-20261206T2200Z --config node.yaml
"""

from __future__ import annotations

from pathlib import Path

import typer

from hpf.cli.errors import cli_errors
from hpf.cli.serve import node_app


@cli_errors
def node_backup(
    directory: Path = typer.Argument(..., help="A new or empty folder to write the backup into (made mode 0700)"),
    config: Path = typer.Option(..., "--config", "-c", help="Node configuration (node.yaml)"),
) -> None:
    """Back up the node's state (audit log up to its last signed checkpoint, budget ledger, keys, replay state),
    while it runs or not. The backup holds the node's private keys: keep it as you keep them."""
    from hpf.node.backup import take_backup
    from hpf.node.config import load_node_config

    node = load_node_config(config)
    done = take_backup(node.node_id, node.state_dir, directory)
    typer.echo(
        f"node {node.node_id}: backed up to {directory} at checkpoint {done.checkpoint} "
        f"({done.checkpoint} entries) in {done.ms:.0f} ms"
    )


@cli_errors
def node_restore(
    backup: Path = typer.Argument(..., help="A folder `hpf node backup` wrote"),
    config: Path = typer.Option(..., "--config", "-c", help="Node configuration (node.yaml) of the node to restore"),
    force: bool = typer.Option(
        False, "--force", help="Restore over a state directory that holds state (it is moved aside, not deleted)"
    ),
) -> None:
    """Bring a node's state back from a backup, on a new host, with the node stopped. At its next start the node
    declares the break in its audit log, refuses every question signed before the restore, and counts every
    budget period that overlaps the time between the backup and the restore as spent."""
    from hpf.node.config import load_node_config
    from hpf.node.restore import restore_backup

    node = load_node_config(config)
    done = restore_backup(node.node_id, node.state_dir, node.listen, backup, force=force)
    aside = f"; the state that was there is kept in {done.moved_aside}" if done.moved_aside else ""
    typer.echo(
        f"node {node.node_id}: restored {node.state_dir} from {backup} (checkpoint {done.checkpoint}, backed up "
        f"at {done.backup_time}); the node declares the break when it next starts{aside}"
    )


def register(app: typer.Typer) -> None:
    node_app.command("backup")(node_backup)
    node_app.command("restore")(node_restore)
