"""The demo federation laid out one folder per party, each a container's volume (``docker/compose.yaml``).

``hpf demo --volumes --prepare`` writes it under one root, as the one-shot setup job of the compose file does with
every volume mounted; each party's container then mounts only its own folders, at the same paths:

- ``ca/``: the CA's key and its record of revocation lists (only the setup job mounts it);
- ``federation/``: what every party reads: the catalog, the CA certificate, the revocation lists, the policy and
  every party's config (no private key);
- ``regions/ID/data/``: region ID's tables; ``regions/ID/state/``: its audit log, keys and TLS key;
- ``coordinator/``: the coordinator's TLS key and state;
- ``consent/``: the consent service's signed revocation list, which every node reads and only the service writes;
- ``people/``: the demo's people (profiles, certificates and keys, receipts) and its consent service's key, which
  ``hpf demo --volumes --check`` runs the checked examples as; it reads no region's state, so each region's own
  container verifies its audit log (``docker/check.sh``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from hpf.demo.launcher import DemoLayout, Progress, write_configs
from hpf.demo.synth import generate_node
from hpf.federation.errors import ConfigError
from hpf.federation.hpf_schema import TABLE_NAMES

PREPARED = "prepared.json"  # in people/: the rows, seed and ports the federation was prepared with
METRICS_OFFSET = 100  # each party serves its metrics on loopback, 100 ports above its own


@dataclass
class VolumeLayout(DemoLayout):
    """:class:`DemoLayout` with one folder per party under ``root`` (``data`` is the people's folder)."""

    root: Path = Path("/hpf")

    def sources(self, node_id: str) -> dict[str, object]:
        return {t: str(self.region(node_id) / "data" / f"{t}.parquet") for t in TABLE_NAMES}

    def region(self, node_id: str) -> Path:
        return self.root / "regions" / node_id

    @property
    def federation(self) -> Path:
        return self.root / "federation"

    @property
    def pki(self) -> Path:
        return self.federation / "pki"

    @property
    def catalog(self) -> Path:
        return self.federation / "federation.yaml"

    @property
    def policy(self) -> Path:
        return self.federation / "policies" / "default.yaml"

    def state(self, node_id: str) -> Path:
        return self.root / "coordinator" / "state" if node_id == "coordinator" else self.region(node_id) / "state"

    def files(self, table: str, node: str) -> list[str]:
        return [str(self.region(n) / "data" / f"{table}.parquet") for n in self.node_ids if node in ("*", n)]

    @property
    def consent_issuer(self) -> Path:
        return self.data / "consent" / "issuer"

    @property
    def consent_revocations(self) -> Path:
        return self.root / "consent" / "revocations.json"

    def node_config(self, node_id: str) -> Path:
        return self.federation / "config" / f"node-{node_id}.yaml"

    @property
    def coordinator_config(self) -> Path:
        return self.federation / "config" / "coordinator.yaml"

    def tls(self, cert: str) -> dict[str, str]:
        """A party's TLS files where its container finds them: a server's key in its own folder, not in pki/."""
        kind, _, name = cert.rpartition("/")
        home = {"nodes": lambda: self.region(name) / "state" / "tls", "": lambda: self.root / "coordinator" / "tls"}
        folder = home[kind]() if kind in home else self.data / "pki" / kind
        return {"ca": str(self.pki / "ca.pem"), "cert": str(folder / f"{name}.pem"), "key": str(folder / f"{name}.key")}


def volume_layout(root: Path, node_ids: list[str], base_port: int) -> VolumeLayout:
    """The layout under ``root``, its ports counted from ``base_port`` as :func:`write_configs` assigns them."""
    if base_port <= 0:
        raise ConfigError("--volumes needs --base-port: the containers' configs name fixed ports", code="DEMO_ARGS")
    layout = VolumeLayout(data=root.resolve() / "people", node_ids=node_ids, root=root.resolve())
    ports = range(base_port, base_port + len(node_ids) + 1)
    layout.ports = {"coordinator": ports[0], **dict(zip(node_ids, ports[1:], strict=True))}
    return layout


def prepare(layout: VolumeLayout, rows: int, seed: int, say: Progress) -> None:
    """Write the data, certificates, keys and configs of every party into its folder, once: a root already
    prepared is left as it is (the setup job runs again on every `up`)."""
    marker = layout.data / PREPARED
    if marker.exists():
        say(f"federation in {layout.root}: already prepared ({marker})")
        return
    layout.data.mkdir(parents=True, exist_ok=True)
    for node_id in layout.node_ids:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=layout.root) as scratch:
            generate_node(Path(scratch), node_id, rows, seed)
            data = layout.region(node_id) / "data"
            data.mkdir(parents=True, exist_ok=True)
            for table in TABLE_NAMES:
                shutil.move(Path(scratch) / node_id / f"{table}.parquet", data / f"{table}.parquet")
        say(f"data for {node_id}: generated {rows:,} deposit rows in {time.perf_counter() - started:.1f}s")
    write_configs(layout, layout.ports["coordinator"])
    _with_metrics(layout)
    _hand_out_keys(layout)
    marker.write_text(json.dumps({"rows": rows, "seed": seed, "base_port": layout.ports["coordinator"]}))
    say(f"federation in {layout.root}: every party's folder written (ca, federation, coordinator, people, regions)")


def prepared(layout: VolumeLayout) -> tuple[int, int]:
    """The rows and seed ``layout`` was prepared with (the checked lookups plant people by them)."""
    marker = layout.data / PREPARED
    try:
        done = json.loads(marker.read_text())
    except (OSError, ValueError):
        raise ConfigError(
            f"no federation was prepared in {layout.root}", code="DEMO_ARGS", hint="run hpf demo --volumes --prepare"
        ) from None
    if done["base_port"] != layout.ports["coordinator"]:
        raise ConfigError(
            f"the federation in {layout.root} was prepared with --base-port {done['base_port']}", code="DEMO_ARGS"
        )
    return int(done["rows"]), int(done["seed"])


def _with_metrics(layout: VolumeLayout) -> None:
    """Every party serves Prometheus metrics on loopback, ``METRICS_OFFSET`` ports above its own."""
    configs = {"coordinator": layout.coordinator_config} | {n: layout.node_config(n) for n in layout.node_ids}
    for party, path in configs.items():
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        config["metrics"] = {"listen": f"127.0.0.1:{layout.ports[party] + METRICS_OFFSET}"}
        path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _hand_out_keys(layout: VolumeLayout) -> None:
    """Move every private key out of ``federation/pki`` (which every party reads) into its owner's folder: the CA's
    to ``ca/``, each server's to its state, the people's to ``people/pki``, whose profiles name ``pki/...``."""
    pki, people = layout.pki, layout.data / "pki"
    _move(pki / "ca.key", layout.root / "ca")
    _move(pki / "ca-revocations.json", layout.root / "ca")
    for node_id in layout.node_ids:
        for suffix in (".pem", ".key"):
            _move(pki / "nodes" / f"{node_id}{suffix}", Path(layout.tls(f"nodes/{node_id}")["key"]).parent)
    (pki / "nodes").rmdir()
    for suffix in (".pem", ".key"):
        _move(pki / f"coordinator{suffix}", Path(layout.tls("coordinator")["key"]).parent)
    (people / "people").mkdir(parents=True, exist_ok=True)
    for cert in sorted((pki / "people").iterdir()):
        if cert.suffix == ".key":
            _move(cert, people / "people")
        else:
            shutil.copy2(cert, people / "people" / cert.name)
    for public in ("ca.pem", "crl.pem"):
        shutil.copy2(pki / public, people / public)
    shutil.copy2(layout.catalog, layout.data / "federation.yaml")  # the profiles name it beside them


def _move(path: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.move(path, folder / path.name)
