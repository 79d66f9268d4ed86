"""A node's public keys: made in its state directory as the server makes them, and checked against the catalog.

Two keys of a node are published in the catalog: its audit key (Ed25519, ``<state_dir>/audit/audit.key``),
which signs its audit log, receipts and answer statements, and its agreement key (X25519,
``<state_dir>/agreement.key``), which clients seal identifiers to and peers derive pairwise masks with.
``hpf node keys`` makes them if missing and prints their public halves (:func:`own_keys`); the server
checks, at start and whenever it takes a changed catalog, that what the catalog publishes for it is its own
(:func:`check_published`).
"""

from __future__ import annotations

import base64

from hpf.federation.audit.keys import KEY as AUDIT_KEY
from hpf.federation.audit.keys import read_signing_public_key
from hpf.federation.audit.log import AuditLog
from hpf.federation.catalog_parties import KEY_FIELDS, NodeEntry, NodeKeys, key_bytes
from hpf.federation.crypto.sealing import AGREEMENT_KEY, AgreementKey
from hpf.federation.errors import ConfigError
from hpf.node.config import NodeConfig

AUDIT_DIR = "audit"  # the audit log and its signing key, under the state directory
KEY_FILES = {"audit_key": f"{AUDIT_DIR}/{AUDIT_KEY}", "agreement_key": AGREEMENT_KEY}  # under the state directory


def own_keys(config: NodeConfig) -> NodeKeys:
    """This node's public keys, the keys made in its state directory when missing, by the very functions the
    server makes them with at start (so a node started later finds and uses them). No secret leaves here."""
    agreement = AgreementKey.load_or_create(config.state_dir)
    audit = AuditLog.signing_public_key(config.state_dir / AUDIT_DIR)
    return _public_keys(config, audit, agreement)


def read_own_keys(config: NodeConfig) -> NodeKeys:
    """This node's public keys, derived from the private keys in its state directory, which are read and nothing
    else: no key is made, no public half written (``hpf node doctor`` changes nothing of the node's). A key that
    cannot be read is refused with its code (``AUDIT_KEY_MISSING``, ``AUDIT_KEY_UNREADABLE``, ``KEY_FILE_...``)."""
    agreement = AgreementKey.load(config.state_dir)
    audit = read_signing_public_key(config.state_dir / AUDIT_DIR)
    return _public_keys(config, audit, agreement)


def _public_keys(config: NodeConfig, audit: bytes, agreement: AgreementKey) -> NodeKeys:
    return NodeKeys(
        node=config.node_id,
        audit_key=base64.b64encode(audit).decode("ascii"),
        agreement_key=agreement.public_b64(),
    )


def check_published(config: NodeConfig, entry: NodeEntry, own: NodeKeys) -> None:
    """NODE_KEY_MISMATCH unless, for each key, the catalog's ``entry`` for this node publishes none yet (a first
    start: the node logs the key to publish) or this node's ``own``."""
    for field in KEY_FIELDS:
        published, mine = getattr(entry, field), getattr(own, field)
        if published is None or key_bytes(published) == key_bytes(mine):
            continue
        raise ConfigError(
            f"the catalog's {field} for node {config.node_id} is not this node's key "
            f"({config.state_dir / KEY_FILES[field]})",
            code="NODE_KEY_MISMATCH",
            hint=f"restore the key file this node had when its key was published, or publish this node's key in "
            f"the catalog ({field}: {mine}) if the old one is lost: what the old key signed or sealed stays the "
            "old key's",
        )
