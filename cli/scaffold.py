"""`hpf init`'s work: a federation laid out for the user's own Parquet or CSV files.

From each region's files it reads the tables' schemas (as a node's reader will read them) and writes, under one
folder: the catalog (``federation.yaml``, each column's type inferred and its class left for an operator to
decide), the CA and every party's certificate (``pki/``), each node's state with its keys (published in the
catalog), one config per node, the coordinator's config, a node policy that extends the packaged base policy, and
a client profile per person. It never guesses a column's class: a column without one is refused by every policy
until an operator classifies it, so nothing but ``COUNT(*)`` can be asked before that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from hpf.cli.init_catalog import catalog_text, parse_classes
from hpf.cli.init_sources import INIT_ARGS, InferredTable, Progress, Source, infer_tables
from hpf.federation.errors import ConfigError


@dataclass
class Scaffold:
    """What `hpf init` wrote, and the commands that start and ask the federation."""

    folder: Path
    regions: list[str]
    tables: dict[str, InferredTable]
    profiles: dict[str, Path]
    unclassified: int

    def node_config(self, region: str) -> Path:
        return self.folder / "nodes" / f"{region}.yaml"

    @property
    def coordinator_config(self) -> Path:
        return self.folder / "coordinator.yaml"

    @property
    def catalog(self) -> Path:
        return _catalog_path(self.folder)


def _catalog_path(folder: Path) -> Path:
    return folder / "federation.yaml"


def scaffold(
    folder: Path,
    federation: str,
    sources: Sequence[Source],
    people: Sequence[tuple[str, str, str | None]],
    class_options: Sequence[str],
    *,
    force: bool,
    narrow: bool = False,
    progress: Progress,
) -> Scaffold:
    """Write a federation for ``sources`` under ``folder`` (see the module's docstring)."""
    from hpf.demo.launcher import free_ports
    from hpf.federation.catalog import load_catalog
    from hpf.federation.crypto.he import HE_FORMAT
    from hpf.federation.trust.pki import init_federation

    folder = folder.resolve()
    regions = _regions(folder, sources, force)
    people = list(people) or [("you", "operator", regions[0])]
    tables = infer_tables(sources, progress)
    classes = parse_classes(class_options, tables)
    folder.mkdir(parents=True, exist_ok=True)
    init_federation(
        folder / "pki",
        regions,
        federation=federation,
        clients=people,
        force=force,
    )
    progress(f"certificates: {folder / 'pki'} (a CA for {federation}, {len(regions)} nodes, {len(people)} people)")
    keys = _node_keys(folder, regions)
    ports = free_ports(len(regions) + 1)
    addresses = {r: f"127.0.0.1:{p}" for r, p in zip(regions, ports[1:], strict=True)}
    catalog_path = _catalog_path(folder)
    text = catalog_text(federation, addresses, keys, tables, classes, HE_FORMAT, narrow=narrow)
    catalog_path.write_text(text, encoding="utf-8")
    load_catalog(catalog_path)  # what was written must be a catalog every party reads
    progress(f"catalog: {catalog_path}")
    _write_server_configs(folder, sources, addresses, coordinator=f"127.0.0.1:{ports[0]}")
    profiles = _write_profiles(folder, people, coordinator=f"127.0.0.1:{ports[0]}")
    unclassified = sum(1 for t in tables.values() for c in t.columns if (t.name, c.name) not in classes)
    return Scaffold(folder, regions, tables, profiles, unclassified)


def _regions(folder: Path, sources: Sequence[Source], force: bool) -> list[str]:
    """The regions the sources name, in order; refused when there are none or fewer than 3, or when ``folder``
    holds a federation already (unless ``force``)."""
    if not sources:
        raise ConfigError("no --source given", code=INIT_ARGS, hint="e.g. --source north=data/north.parquet")
    catalog_path = _catalog_path(folder)
    if catalog_path.exists() and not force:
        raise ConfigError(
            f"{catalog_path} exists: this folder holds a federation already",
            code="INIT_EXISTS",
            hint="give another folder, or --force to write it again (keys, certificates and state are kept)",
        )
    regions = list(dict.fromkeys(s.region for s in sources))
    if len(regions) < 3:
        raise ConfigError(
            f"{len(regions)} region(s) given: a federation needs at least 3",
            code=INIT_ARGS,
            hint="a masked sum takes at least 3 regions, so no region's partial can be read from it",
        )
    return regions


def _node_keys(folder: Path, regions: list[str]) -> dict[str, tuple[str, str]]:
    """Each node's state with its audit key and agreement key (made where absent): the public halves, for the
    catalog."""
    from hpf.federation.audit.log import AuditLog
    from hpf.federation.crypto.sealing import AgreementKey

    keys: dict[str, tuple[str, str]] = {}
    for region in regions:
        state = folder / "state" / region
        with AuditLog.open(state / "audit", region, check_all_signatures=False) as log:
            audit_key = log.public_key_b64()
        keys[region] = (audit_key, AgreementKey.load_or_create(state).public_b64())
    return keys


def _write_server_configs(folder: Path, sources: Sequence[Source], addresses: dict[str, str], coordinator: str) -> None:
    """The node policy, each node's config (its tables' files) and the coordinator's."""
    _write(folder / "policies" / "node.yaml", POLICY_TEXT)
    by_region: dict[str, dict[str, str]] = {}
    for s in sources:
        by_region.setdefault(s.region, {})[s.table] = str(s.path)
    for region, address in addresses.items():
        _dump(
            folder / "nodes" / f"{region}.yaml",
            {
                "node_id": region,
                "listen": address,
                "catalog": "../federation.yaml",
                "tables": by_region[region],
                "tls": _tls(f"nodes/{region}"),
                "revocations": "../pki/crl.pem",
                "policy": "../policies/node.yaml",
                "state_dir": f"../state/{region}",
            },
        )
    _dump(
        folder / "coordinator.yaml",
        {
            "listen": coordinator,
            "catalog": "federation.yaml",
            "revocations": "pki/crl.pem",
            "revocation_state": "state/coordinator/revocation-state.json",
            "tls": {k: v.removeprefix("../") for k, v in _tls("coordinator").items()},
        },
    )


def _write_profiles(folder: Path, people: list[tuple[str, str, str | None]], coordinator: str) -> dict[str, Path]:
    """A client profile per person (the first one's is ``client.yaml``): their paths by name."""
    profiles: dict[str, Path] = {}
    for i, (name, role, _) in enumerate(people):
        path = folder / ("client.yaml" if i == 0 else f"client-{name}.yaml")
        _dump(
            path,
            {
                "coordinator": coordinator,
                "catalog": "federation.yaml",
                "keys": f"keys/{name}.bfv",
                "receipts": f"receipts/{name}.jsonl",
                **({"purpose": ROLE_PURPOSE[role]} if role in ROLE_PURPOSE else {}),
                "tls": {k: v.removeprefix("../") for k, v in _tls(f"people/{name}").items()},
            },
        )
        profiles[name] = path
    return profiles


# the purpose a role's questions carry by default in the profiles `hpf init` writes (the base policy asks one of
# these roles for a purpose on every table)
ROLE_PURPOSE = {"operator": "operations", "analyst": "statistics"}

POLICY_TEXT = """\
# This federation's node policy, written by `hpf init`: the packaged base policy (`hpf policy show` prints it
# merged), which grants nothing on a column until the catalog gives it a class. Tighten or extend it here, e.g.
#   roles:
#     analyst:
#       tables:
#         lineitem: {columns: {l_comment: []}}
version: 1
extends: hpf:base
description: written by hpf init
"""


def _tls(name: str) -> dict[str, str]:
    return {"ca": "../pki/ca.pem", "cert": f"../pki/{name}.pem", "key": f"../pki/{name}.key"}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _dump(path: Path, doc: object) -> None:
    _write(path, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
