"""Running nodes and the coordinator take a changed catalog where that is safe, and only there.

An operator federating their own tables starts the nodes before their keys are in the catalog: every question
fails with SECAGG_PEER_KEY_MISSING until each node's `hpf node keys` is published with `hpf catalog keys`, and
from then on the next question is answered, with no party restarted. A change a running party cannot take (a
column's type, a replaced key) or a file it cannot read is logged with its code, and the catalog in force goes on
answering. Every answer here is exact and equals DuckDB over the pooled files.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import pytest
import yaml
from typer.testing import CliRunner, Result

from hpf.cli.app import _register, app
from hpf.client.federation_client import FederationClient
from hpf.client.profile import ClientProfile
from hpf.coordinator.server import running_coordinator
from hpf.federation.catalog import load_catalog
from hpf.federation.config_files import parse_model
from hpf.federation.generated import hpf_federation_pb2 as pb

_register()
RPC_TIMEOUT_S = 20.0
TABLES: dict[str, Any] = {
    "t": {
        "columns": {
            "g": {"type": "VARCHAR", "class": "public", "domain": {"values": ["a", "b"]}},
            "v": {"type": "BIGINT", "class": "public"},
        }
    }
}
ROWS = {
    "n1": {"t": [("a", 1), ("b", 5), ("a", 40)]},
    "n2": {"t": [("a", 2), ("b", -9)]},
    "n3": {"t": [("b", 7), ("a", -3), ("b", 100)]},
}
SQL = "SELECT g, COUNT(*), SUM(v) FROM t GROUP BY g ORDER BY g"
PARTIES = ("node n1", "node n2", "node n3", "coordinator")


def hpf(*args: object) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def client(fed: harness.Federation, catalog: Path | None) -> FederationClient:
    """A client pinning ``catalog`` (None: it takes the coordinator's)."""
    doc = yaml.safe_load(fed.profile_path.read_text())
    doc.pop("catalog")
    if catalog is not None:
        doc["catalog"] = str(catalog)
    return FederationClient(parse_model(fed.profile_path, doc, ClientProfile))


def replace_file(path: Path, text: str) -> None:
    """Replace ``path`` whole, as an editor or a copy from another host does."""
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def described_digests(fed: harness.Federation) -> set[str]:
    """The catalog digest each node describes."""
    with fed.node_stubs_as_coordinator() as stubs:
        return {stub.Describe(pb.DescribeRequest(), timeout=RPC_TIMEOUT_S).catalog_digest for stub in stubs.values()}


def logged(caplog: pytest.LogCaptureFixture, code: str) -> list[str]:
    """The parties that logged ``code`` about the catalog, one entry per message."""
    return sorted(
        party
        for r in caplog.records
        if r.name == "hpf.catalog" and f"[{code}]" in (message := r.getMessage())
        for party in PARTIES
        if message.startswith(f"{party}:")
    )


@pytest.fixture
def unpublished(tmp_path: Path) -> Iterator[harness.Federation]:
    """Three regions running on a catalog that publishes none of their keys (their first start)."""
    with harness.federation(tmp_path, TABLES, ROWS, published_keys=()) as fed:
        yield fed


def test_keys_published_while_every_party_runs_answer_the_next_question(
    unpublished: harness.Federation, caplog: pytest.LogCaptureFixture
) -> None:
    fed = unpublished
    caplog.set_level(logging.INFO)
    with client(fed, fed.catalog_path) as c:
        assert harness.refusal(lambda: c.query(SQL)).code == "SECAGG_PEER_KEY_MISSING"
    servers = {n: node.server for n, node in fed.nodes.items()}, fed.coordinator.server

    outputs: list[str] = []
    key_files = []
    for node_id, config in fed.node_configs.items():  # on each node's host
        config_path = fed.root / f"{node_id}.node.yaml"
        config_path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
        key_files.append(fed.root / f"{node_id}.keys.yaml")
        printed = hpf("node", "keys", "--config", config_path, "--output", key_files[-1])
        assert printed.exit_code == 0, printed.stderr
        outputs += [printed.stdout, printed.stderr, key_files[-1].read_text()]
    published = hpf("catalog", "keys", fed.catalog_path, *key_files)  # where the catalog is kept
    assert published.exit_code == 0, published.stderr
    outputs += [published.stdout, published.stderr]
    for node_id in fed.node_ids:
        assert f"node {node_id}: audit_key published, agreement_key published" in published.stdout

    with client(fed, fed.catalog_path) as c:  # the new catalog, pinned
        answer = c.query(SQL)
    assert [tuple(r) for r in answer.rows] == fed.oracle(SQL)
    assert answer.verified  # every region's statement checked against the audit key just published
    with client(fed, None) as c:  # the coordinator hands out the new catalog
        assert c.catalog.nodes == load_catalog(fed.catalog_path).nodes
    assert described_digests(fed) == {hashlib.sha256(fed.catalog_path.read_bytes()).hexdigest()}
    assert ({n: node.server for n, node in fed.nodes.items()}, fed.coordinator.server) == servers  # none restarted
    assert logged(caplog, "CATALOG_CHANGE_NEEDS_RESTART") == []
    taken = [r.getMessage() for r in caplog.records if r.name == "hpf.catalog" and " taken " in r.getMessage()]
    assert sorted(m.split(":")[0] for m in taken) == sorted(PARTIES)

    secrets = [s for n in fed.node_ids for s in harness.private_key_texts(fed.root / "state" / n)]
    seen = "\n".join([*outputs, caplog.text, fed.catalog_path.read_text()])
    assert secrets and not [s for s in secrets if s in seen]


def test_a_change_a_running_party_cannot_take_is_logged_and_the_catalog_in_force_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with harness.federation(tmp_path, TABLES, ROWS) as fed:
        in_force = fed.catalog_path.read_text()
        pinned = tmp_path / "pinned.yaml"  # the catalog in force, as the askers keep it
        pinned.write_text(in_force)
        digest = hashlib.sha256(in_force.encode()).hexdigest()
        doc = yaml.safe_load(in_force)
        other_key = base64.b64encode(bytes(range(32))).decode()
        changes = {
            "a column's type": lambda d: d["tables"]["t"]["columns"]["v"].update({"type": "INTEGER"}),
            "a replaced key": lambda d: d["nodes"][1].update({"agreement_key": other_key}),
        }
        for what, change in changes.items():
            caplog.clear()
            changed = yaml.safe_load(in_force)
            change(changed)
            replace_file(fed.catalog_path, yaml.safe_dump(changed, sort_keys=False))
            with client(fed, pinned) as c:
                for _ in range(2):  # refused once per change of the file, not once per question
                    assert [tuple(r) for r in c.query(SQL).rows] == fed.oracle(SQL), what
            assert logged(caplog, "CATALOG_CHANGE_NEEDS_RESTART") == sorted(PARTIES), what
            assert described_digests(fed) == {digest}, what
            with client(fed, None) as c:
                assert c.catalog.tables == fed.catalog.tables, what  # the coordinator hands out the one in force

        caplog.clear()
        replace_file(fed.catalog_path, "federation: [test\n")
        with client(fed, pinned) as c:
            assert [tuple(r) for r in c.query(SQL).rows] == fed.oracle(SQL)
        assert logged(caplog, "CONFIG_SYNTAX") == sorted(PARTIES)
        assert described_digests(fed) == {digest}

        caplog.clear()
        replace_file(fed.catalog_path, yaml.safe_dump(doc, sort_keys=False))  # the one in force, in another text
        with client(fed, pinned) as c:
            assert [tuple(r) for r in c.query(SQL).rows] == fed.oracle(SQL)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "hpf.catalog"]
        assert described_digests(fed) == {hashlib.sha256(fed.catalog_path.read_bytes()).hexdigest()}


def test_a_region_at_a_new_address_is_dialled_there_from_the_next_question(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hpf.catalog")
    with harness.federation(tmp_path, TABLES, ROWS) as fed:
        assert fed.coordinator_config is not None
        doc = yaml.safe_load(fed.catalog_path.read_text())
        for node in doc["nodes"]:  # this coordinator dials the catalog's addresses, not the harness's
            node["address"] = f"127.0.0.1:{fed.nodes[node['id']].port}"
        n2_address = doc["nodes"][1]["address"]
        doc["nodes"][1]["address"] = "127.0.0.1:1"  # where n2 was: nothing listens there now
        catalog = tmp_path / "coordinator" / "federation.yaml"
        catalog.parent.mkdir()
        replace_file(catalog, yaml.safe_dump(doc, sort_keys=False))
        with running_coordinator(fed.coordinator_config.model_copy(update={"catalog": catalog})) as coordinator:
            profile = yaml.safe_load(fed.profile_path.read_text()) | {"coordinator": f"127.0.0.1:{coordinator.port}"}
            with FederationClient(parse_model(fed.profile_path, profile, ClientProfile)) as c:
                before = c.query(SQL)
            assert before.answered == ["n1", "n3"] and [m["node_id"] for m in before.missing] == ["n2"]

            doc["nodes"][1]["address"] = n2_address
            replace_file(catalog, yaml.safe_dump(doc, sort_keys=False))
            with FederationClient(parse_model(fed.profile_path, profile, ClientProfile)) as c:
                after = c.query(SQL)
            assert sorted(after.answered) == ["n1", "n2", "n3"] and after.missing == []
            assert [tuple(r) for r in after.rows] == fed.oracle(SQL)
            assert "coordinator: catalog" in caplog.text and "node n2: address" in caplog.text

            # an address is taken while running, the name it is dialled by is not: n2's address now leads to n3,
            # whose certificate does not carry n2's name, so n3 is not asked (nor summed) a second time as n2
            doc["nodes"][1]["address"] = doc["nodes"][2]["address"]
            replace_file(catalog, yaml.safe_dump(doc, sort_keys=False))
            with FederationClient(parse_model(fed.profile_path, profile, ClientProfile)) as c:
                moved = c.query(SQL)
            assert moved.answered == ["n1", "n3"] and [m["node_id"] for m in moved.missing] == ["n2"]
            assert [tuple(r) for r in moved.rows] == [tuple(r) for r in before.rows]
