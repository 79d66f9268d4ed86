"""`hpf node keys` and `hpf catalog keys`: a node's public keys, from its host into the federation catalog.

On each node's host::

    hpf node keys --config node.yaml --output north.keys.yaml

makes the node's keys in its state directory if missing (as the server would at start) and prints their public
halves. Then, where the catalog is kept::

    hpf catalog keys federation.yaml north.keys.yaml south.keys.yaml

writes them into the catalog's node entries (see :mod:`federation.catalog_keys`). Running nodes and the
coordinator take newly published keys from their copy of the catalog without a restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hpf.cli.catalog import catalog_app
from hpf.cli.errors import cli_errors
from hpf.cli.serve import node_app

if TYPE_CHECKING:
    from hpf.federation.catalog_parties import NodeKeys

NODE_CONFIG = typer.Option(..., "--config", "-c", help="Node configuration (node.yaml)")


@cli_errors
def node_keys(
    config: Path = NODE_CONFIG,
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the keys to FILE instead of stdout"),
) -> None:
    """Print this node's public keys for the catalog (made in its state directory if missing); no secret."""
    from hpf.federation.catalog_keys import keys_document
    from hpf.federation.private_files import write_file
    from hpf.node.config import load_node_config
    from hpf.node.keys import own_keys

    node = load_node_config(config)
    document = keys_document(own_keys(node))
    kept = f"node {node.node_id}: keys kept in {node.state_dir.resolve()}"
    if output is None:
        typer.echo(document, nl=False)
        typer.echo(kept, err=True)
        return
    _check_output(output, node.state_dir)
    write_file(output, document.encode("utf-8"), 0o644)
    publish = f"publish them with `hpf catalog keys CATALOG {output}`"
    typer.echo(f"{kept}; public keys written to {output}: {publish}", err=True)


def _check_output(output: Path, state_dir: Path) -> None:
    """Refuse to write the key file over anything but a key file, or into the node's state directory (where a
    mistyped name could replace the node's own private key)."""
    from hpf.federation.catalog_keys import load_node_keys
    from hpf.federation.errors import ConfigError, FederationError

    if output.resolve().is_relative_to(state_dir.resolve()):
        raise ConfigError(
            f"{output}: inside the node's state directory {state_dir}",
            code="NODE_KEYS_OUTPUT",
            hint="write the public keys elsewhere, e.g. --output north.keys.yaml",
        )
    if output.exists() or output.is_symlink():
        try:
            load_node_keys(output)
        except FederationError:
            raise ConfigError(
                f"{output} exists and is not a key file `hpf node keys` wrote",
                code="NODE_KEYS_OUTPUT",
                hint="give a new file name, or remove that file first",
            ) from None


@cli_errors
def catalog_keys(
    catalog: Path = typer.Argument(..., help="Catalog file (federation.yaml), edited in place"),
    key_files: list[Path] = typer.Argument(None, help="Key files `hpf node keys` wrote, one per node"),
    node_configs: list[Path] = typer.Option(
        [], "--node-config", help="A node's config on this machine: its keys are read from its state directory"
    ),
    replace: bool = typer.Option(
        False, "--replace", help="Replace a key the catalog already publishes for a node (its key was lost or changed)"
    ),
) -> None:
    """Publish nodes' public keys in the catalog, keeping the rest of the file as written."""
    from hpf.federation.catalog_keys import load_node_keys, publish_keys
    from hpf.node.config import load_node_config
    from hpf.node.keys import own_keys

    key_sets: list[NodeKeys] = [load_node_keys(f) for f in key_files or []]
    key_sets += [own_keys(load_node_config(c)) for c in node_configs]
    if not key_sets:
        raise typer.BadParameter("give a key file from `hpf node keys`, or --node-config", param_hint="KEY_FILES")
    changes = publish_keys(catalog, key_sets, replace)
    nodes: dict[str, list[str]] = {}
    for change in changes:
        nodes.setdefault(change.node, []).append(f"{change.field} {change.action}")
    for node, done in nodes.items():
        typer.echo(f"{catalog}: node {node}: {', '.join(done)}")
    if all(c.action == "unchanged" for c in changes):
        typer.echo(f"{catalog}: unchanged")
        return
    typer.echo(
        f"{catalog}: written; copy it to every node, the coordinator and the clients that pin it: running parties "
        "take newly published keys on their next request"
    )


def register(app: typer.Typer) -> None:
    node_app.command("keys")(node_keys)
    catalog_app.command("keys")(catalog_keys)
