"""`hpf node keys` prints a node's public keys (never a secret); `hpf catalog keys` writes them into the catalog,
leaving the rest of the file as the operator wrote it, and refuses what would let a key file pose as a region."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import harness
import pytest
import yaml
from typer.testing import CliRunner, Result

from hpf.cli.app import _register, app
from hpf.federation.audit.keys import KEY as AUDIT_KEY
from hpf.federation.catalog import load_catalog
from hpf.federation.crypto.sealing import AGREEMENT_KEY

_register()
runner = CliRunner()

KEY_A = "A" * 43 + "="
CATALOG = """\
# the federation of the north and the south
federation: f
nodes:
  - {id: north, address: 10.0.0.11:50051}   # the northern centre
  - id: south
    address: 10.0.0.12:50051   # the southern centre
    name: South
tables:
  t:
    columns:
      v: {type: BIGINT}   # fen
"""


def hpf(*args: object) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def _node_config(root: Path, node: str) -> Path:
    path = root / node / "node.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(
            {
                "node_id": node,
                "catalog": "../federation.yaml",
                "tables": {"t": "data/t.parquet"},
                "insecure": True,
                "state_dir": "state",
            }
        )
    )
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "federation.yaml").write_text(CATALOG)
    return tmp_path


def test_node_keys_makes_the_keys_once_and_prints_only_their_public_halves(root: Path) -> None:
    config = _node_config(root, "north")
    first = hpf("node", "keys", "--config", config)
    assert first.exit_code == 0, first.stderr
    doc = yaml.safe_load(first.stdout)
    assert list(doc) == ["node", "audit_key", "agreement_key"] and doc["node"] == "north"
    state = root / "north" / "state"
    assert (state / "agreement.pub").read_text().strip() == doc["agreement_key"]
    assert stat.S_IMODE(os.stat(state / AGREEMENT_KEY).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state / "audit" / AUDIT_KEY).st_mode) == 0o600
    again = hpf("node", "keys", "--config", config, "--output", root / "north.keys.yaml")
    assert again.exit_code == 0 and again.stdout == ""
    assert "publish them with `hpf catalog keys CATALOG" in again.stderr
    assert (root / "north.keys.yaml").read_text() == first.stdout  # the same keys: made once
    for secret in harness.private_key_texts(state):
        assert secret not in first.stdout + first.stderr + again.stdout + again.stderr


def test_node_keys_writes_over_nothing_but_its_own_key_file(root: Path) -> None:
    """A mistyped --output cannot replace the node's private keys, nor any other file: only a key file."""
    config = _node_config(root, "north")
    assert hpf("node", "keys", "--config", config).exit_code == 0
    state = root / "north" / "state"
    private = {p: p.read_bytes() for p in (state / AGREEMENT_KEY, state / "audit" / AUDIT_KEY)}
    other = root / "notes.txt"
    other.write_text("an operator's notes\n")
    (root / "link.yaml").symlink_to(state / AGREEMENT_KEY)
    targets = [*private, state / "new.yaml", root / "north" / "state" / ".." / "state" / "x.yaml", other]
    for target in [*targets, root / "link.yaml"]:
        refused = hpf("node", "keys", "--config", config, "--output", target)
        assert refused.exit_code == 2 and "[NODE_KEYS_OUTPUT]" in refused.stderr, (target, refused.stderr)
    assert {p: p.read_bytes() for p in private} == private and other.read_text() == "an operator's notes\n"
    assert not (state / "new.yaml").exists() and not (state / "x.yaml").exists()
    kept = root / "north.keys.yaml"
    for _ in range(2):  # a key file it wrote is written again
        assert hpf("node", "keys", "--config", config, "--output", kept).exit_code == 0


def test_catalog_keys_publishes_keys_keeping_the_file_as_written(root: Path) -> None:
    north = hpf("node", "keys", "--config", _node_config(root, "north"), "-o", root / "north.keys.yaml")
    south = hpf("node", "keys", "--config", _node_config(root, "south"), "-o", root / "south.keys.yaml")
    assert north.exit_code == south.exit_code == 0
    catalog = root / "federation.yaml"
    catalog.chmod(0o640)
    result = hpf("catalog", "keys", catalog, root / "north.keys.yaml", root / "south.keys.yaml")
    assert result.exit_code == 0, result.stderr
    n, s = (yaml.safe_load((root / f"{x}.keys.yaml").read_text()) for x in ("north", "south"))
    assert catalog.read_text() == CATALOG.replace(
        "address: 10.0.0.11:50051}",
        f"address: 10.0.0.11:50051, audit_key: {n['audit_key']}, agreement_key: {n['agreement_key']}}}",
    ).replace(
        "    name: South\n",
        f"    name: South\n    audit_key: {s['audit_key']}\n    agreement_key: {s['agreement_key']}\n",
    )
    assert stat.S_IMODE(os.stat(catalog).st_mode) == 0o640
    assert f"{catalog}: node north: audit_key published, agreement_key published\n" in result.stdout
    assert f"{catalog}: node south: audit_key published, agreement_key published\n" in result.stdout
    assert hpf("catalog", "check", catalog).exit_code == 0
    for node in ("north", "south"):
        for secret in harness.private_key_texts(root / node / "state"):
            assert secret not in result.stdout + result.stderr + catalog.read_text()

    before = catalog.read_bytes(), os.stat(catalog).st_mtime_ns
    same = hpf("catalog", "keys", catalog, root / "north.keys.yaml")
    assert same.exit_code == 0 and same.stdout.endswith(f"{catalog}: unchanged\n")
    assert (catalog.read_bytes(), os.stat(catalog).st_mtime_ns) == before


def test_catalog_keys_reads_node_configs_on_one_machine(root: Path) -> None:
    catalog = root / "federation.yaml"
    linked = root / "linked.yaml"  # a catalog linked to stays a link to the file written
    linked.symlink_to(catalog)
    result = hpf("catalog", "keys", linked, "--node-config", _node_config(root, "south"))
    assert result.exit_code == 0, result.stderr
    assert linked.is_symlink()
    south = load_catalog(catalog).nodes[1]
    assert south.agreement_key == (root / "south" / "state" / "agreement.pub").read_text().strip()
    assert south.audit_key is not None and load_catalog(catalog).nodes[0].audit_key is None


def test_a_published_key_is_replaced_only_with_replace(root: Path) -> None:
    catalog = root / "federation.yaml"
    catalog.write_text(CATALOG.replace("name: South\n", f"name: South\n    agreement_key: {KEY_A}\n"))
    keys = root / "south.keys.yaml"
    assert hpf("node", "keys", "--config", _node_config(root, "south"), "-o", keys).exit_code == 0
    before = catalog.read_bytes()
    refused = hpf("catalog", "keys", catalog, keys)
    assert refused.exit_code == 2
    assert "[CATALOG_KEY_CONFLICT] the catalog already publishes another key for south agreement_key" in refused.stderr
    assert "--replace" in refused.stderr
    assert catalog.read_bytes() == before  # nothing written, not even the audit key that was missing

    replaced = hpf("catalog", "keys", catalog, keys, "--replace")
    assert replaced.exit_code == 0, replaced.stderr
    assert "node south: audit_key published, agreement_key replaced" in replaced.stdout
    assert load_catalog(catalog).nodes[1].agreement_key == yaml.safe_load(keys.read_text())["agreement_key"]


@pytest.mark.parametrize(
    ("content", "code"),
    [
        ({"node": "north", "audit_key": KEY_A, "agreement_key": "c2hvcnQ="}, "NODE_KEYS_INVALID"),  # 5 bytes
        ({"node": "north", "audit_key": KEY_A}, "NODE_KEYS_INVALID"),  # a key missing
        ({"node": "North!", "audit_key": KEY_A, "agreement_key": KEY_A}, "NODE_KEYS_INVALID"),
        ({"node": "west", "audit_key": KEY_A, "agreement_key": KEY_A}, "CATALOG_NODE_UNKNOWN"),
        (yaml.safe_load(CATALOG), "CONFIG_WRONG_KIND"),  # the catalog given as a key file
        ("node: [north\n", "CONFIG_SYNTAX"),
    ],
)
def test_a_bad_key_file_is_refused_with_its_code_and_nothing_is_written(root: Path, content: object, code: str) -> None:
    bad = root / "bad.keys.yaml"
    bad.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    catalog = root / "federation.yaml"
    result = hpf("catalog", "keys", catalog, bad)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: [{code}]"), result.stderr
    assert catalog.read_text() == CATALOG


def test_two_key_files_for_one_node_must_agree(root: Path) -> None:
    keys = root / "north.keys.yaml"
    assert hpf("node", "keys", "--config", _node_config(root, "north"), "-o", keys).exit_code == 0
    other = root / "other.keys.yaml"
    other.write_text(yaml.safe_dump({**yaml.safe_load(keys.read_text()), "audit_key": KEY_A}))
    result = hpf("catalog", "keys", root / "federation.yaml", keys, other)
    assert result.exit_code == 2 and "[NODE_KEYS_TWICE]" in result.stderr
    assert (root / "federation.yaml").read_text() == CATALOG


@pytest.mark.parametrize(
    ("catalog_text", "key_file", "where"),
    [
        # an entry that reads as south's (its first line) and that YAML takes as north's (its last `id`)
        (
            CATALOG.replace("    name: South\n", "    name: South\n    id: north\n").replace(
                "  - {id: north, address: 10.0.0.11:50051}", "  - {id: west, address: 10.0.0.13:50051}"
            ),
            {"node": "north", "audit_key": KEY_A, "agreement_key": KEY_A},
            "[CONFIG_INVALID] {root}/federation.yaml:8: nodes[1].id: written twice (first on line 5)",
        ),
        # a key file that reads as south's and is north's
        (
            CATALOG,
            f"node: south\naudit_key: {KEY_A}\nagreement_key: {KEY_A}\nnode: north\n",
            "[NODE_KEYS_INVALID] {root}/north.keys.yaml:4: node: written twice (first on line 1)",
        ),
    ],
)
def test_a_catalog_or_key_file_that_gives_a_field_twice_is_refused_and_nothing_is_written(
    root: Path, catalog_text: str, key_file: object, where: str
) -> None:
    catalog = root / "federation.yaml"
    catalog.write_text(catalog_text)
    keys = root / "north.keys.yaml"
    keys.write_text(key_file if isinstance(key_file, str) else yaml.safe_dump(key_file))
    result = hpf("catalog", "keys", catalog, keys)
    assert result.exit_code == 2, result.stdout
    assert result.stderr.startswith(f"error: {where.format(root=root)}"), result.stderr
    assert catalog.read_text() == catalog_text
