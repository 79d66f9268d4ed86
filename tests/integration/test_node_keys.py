"""A node checks at start that the keys the catalog publishes for it are its own, and says which to publish."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import harness
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hpf.federation.audit.keys import KEY as AUDIT_KEY
from hpf.federation.audit.keys import public_key_raw
from hpf.federation.audit.log import AuditLog
from hpf.federation.catalog import load_catalog
from hpf.federation.config_files import parse_model
from hpf.federation.crypto.sealing import AGREEMENT_KEY, AgreementKey
from hpf.federation.errors import ConfigError
from hpf.federation.trust.pki import init_federation
from hpf.node.config import NodeConfig
from hpf.node.keys import own_keys
from hpf.node.server import running_node

TABLES = {
    "t": {
        "columns": {
            "g": {"type": "VARCHAR", "class": "public", "domain": {"values": ["a", "b"]}},
            "v": {"type": "BIGINT", "class": "public"},
        }
    }
}


def _other_key(kind: str) -> str:
    if kind == "audit_key":
        return base64.b64encode(public_key_raw(Ed25519PrivateKey.generate().public_key())).decode()
    return base64.b64encode(X25519PrivateKey.generate().public_key().public_bytes_raw()).decode()


class Region:
    """One node's files: certificates, a table, a catalog naming it, and its config (state in ``state``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        init_federation(root / "pki", ["north"], federation="t")
        harness.write_table(root / "data" / "t.parquet", {"g": "VARCHAR", "v": "BIGINT"}, [("a", 1)])
        self.catalog_path = root / "federation.yaml"

    def config(self, state: str = "state", **keys: str) -> NodeConfig:
        node: dict[str, Any] = {"id": "north", "address": "127.0.0.1:1", **keys}
        self.catalog_path.write_text(yaml.safe_dump({"federation": "t", "nodes": [node], "tables": TABLES}))
        pki = self.root / "pki"
        doc = {
            "node_id": "north",
            "catalog": str(self.catalog_path),
            "tables": {"t": str(self.root / "data" / "t.parquet")},
            "policy": str(harness.OPEN_POLICY),
            "state_dir": str(self.root / state),
            "revocations": str(pki / "crl.pem"),
            "audit_fsync": False,
            "tls": {
                "ca": str(pki / "ca.pem"),
                "cert": str(pki / "nodes/north.pem"),
                "key": str(pki / "nodes/north.key"),
            },
        }
        return parse_model(self.root / "node.yaml", doc, NodeConfig)

    def start(self, config: NodeConfig) -> dict[str, str]:
        """Start and stop the node; the keys it has, as the catalog would publish them."""
        with running_node(config) as node:
            return {
                "audit_key": node.handler.audit.public_key_b64(),
                "agreement_key": base64.b64encode(node.handler.agreement.public).decode(),  # type: ignore[union-attr]
            }


@pytest.fixture
def region(tmp_path: Path) -> Region:
    return Region(tmp_path)


def test_a_first_start_before_the_keys_are_published_logs_them(
    region: Region, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="hpf.node"):
        keys = region.start(region.config())
    assert f"audit key: {keys['audit_key']}" in caplog.text
    assert f"agreement key: {keys['agreement_key']}" in caplog.text
    assert region.start(region.config(**keys)) == keys  # published: the same keys start again
    assert load_catalog(region.catalog_path).nodes[0].audit_key == keys["audit_key"]


@pytest.mark.parametrize("field", ["audit_key", "agreement_key"])
def test_a_published_key_that_is_not_the_nodes_own_stops_it(region: Region, field: str) -> None:
    keys = region.start(region.config())
    for published in (
        {**keys, field: _other_key(field)},  # someone else's key under this node's name
        {field: _other_key(field)},  # and with the other key not published yet
    ):
        with pytest.raises(ConfigError) as err:
            region.start(region.config(**published))
        assert err.value.code == "NODE_KEY_MISMATCH" and field in err.value.message
        assert f"{field}: {keys[field]}" in (err.value.hint or "")  # what to publish if the old key is lost
    assert region.start(region.config(**keys)) == keys  # nothing was left locked or half-started


@pytest.mark.parametrize("field", ["audit_key", "agreement_key"])
def test_a_node_started_on_fresh_state_does_not_pass_for_the_published_one(region: Region, field: str) -> None:
    keys = region.start(region.config())
    with pytest.raises(ConfigError) as err:  # e.g. the state directory lost, or the node moved without its keys
        region.start(region.config(state="fresh", **{field: keys[field]}))
    assert err.value.code == "NODE_KEY_MISMATCH"
    assert "restore the key file" in (err.value.hint or "")


def _replace(path: Path, text: str) -> None:
    """Replace ``path`` whole (a new file: the running node sees it changed however soon after)."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)
    os.replace(fresh, path)


def test_keys_made_by_node_keys_are_the_ones_the_node_starts_with(region: Region) -> None:
    config = region.config()
    made = own_keys(config).model_dump(exclude={"node"})  # `hpf node keys`, on a fresh state directory
    assert region.start(region.config(**made)) == made  # published before the first start: the node's own


def test_a_running_node_takes_its_own_published_keys_and_refuses_others(
    region: Region, caplog: pytest.LogCaptureFixture
) -> None:
    config = region.config()
    keys = own_keys(config).model_dump(exclude={"node"})
    with running_node(config) as node:
        first = node.catalog.current()
        unpublished = region.catalog_path.read_text()
        for field in ("audit_key", "agreement_key"):
            caplog.clear()
            foreign = unpublished.replace("id: north", f"id: north\n  {field}: {_other_key(field)}")
            _replace(region.catalog_path, foreign)
            assert node.catalog.current() is first  # someone else's key under this node's name: not taken
            assert "[NODE_KEY_MISMATCH]" in caplog.text and field in caplog.text
        own = {**yaml.safe_load(unpublished), "nodes": [{"id": "north", "address": "127.0.0.1:1", **keys}]}
        _replace(region.catalog_path, yaml.safe_dump(own))
        taken = node.catalog.current()
        assert taken.catalog.nodes[0].model_dump(include=set(keys)) == keys
        assert taken.digest == hashlib.sha256(region.catalog_path.read_bytes()).hexdigest()


@pytest.mark.parametrize("made", ["agreement", "audit"])
def test_two_makers_of_a_nodes_key_at_once_keep_one_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, made: str
) -> None:
    """`hpf node keys` and the node's first start may both find no key and make one: whichever writes second must
    take the first's key, not replace it (the other would then serve, or publish, a key no file holds, and an
    audit log signed by a key that is gone)."""
    state = tmp_path / "state"
    make, name = {
        "agreement": (lambda: AgreementKey.load_or_create(state).public, AGREEMENT_KEY),
        "audit": (lambda: AuditLog.signing_public_key(state / "audit"), AUDIT_KEY),
    }[made]
    real_exists = Path.exists
    other: list[bytes] = []

    def exists(self: Path) -> bool:
        found = real_exists(self)
        if self.name == name and not found and not other:  # this maker found no key: the other makes one now
            other.append(b"")
            other[0] = make()
        return found

    monkeypatch.setattr(Path, "exists", exists)
    first = make()
    monkeypatch.undo()
    assert other and other[0] and first == other[0] == make()
