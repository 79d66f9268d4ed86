"""The parties a federation catalog lists besides its tables: its nodes (address, region code, public keys) and
the consent issuers whose grants regions may accept (:mod:`federation.catalog` describes the file)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from hpf.federation.regions import check_region_code

_NODE_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")  # one DNS label: a server is <id>.node.<federation>

KEY_FIELDS = ("audit_key", "agreement_key")  # a node's public keys, as the catalog publishes them


def _public_key(v: str, info: ValidationInfo) -> str:
    """A node's public key field: the raw 32 bytes in base64."""
    if key_bytes(v) is None:
        kind = "Ed25519" if info.field_name == "audit_key" else "X25519"
        raise ValueError(f"{info.field_name} must be the node's 32-byte {kind} public key in base64 (a node logs it)")
    return v


def key_bytes(text: str) -> bytes | None:
    """The raw 32 bytes of a public key in base64, or None when it is not one.

    >>> len(key_bytes("A" * 43 + "=")), key_bytes("QUJD"), key_bytes("not base64!")
    (32, None, None)
    """
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def _node_id(v: str) -> str:
    if not _NODE_ID.fullmatch(v):
        raise ValueError(f"node id {v!r} must be lower-case letters, digits and '-' (e.g. 'shanghai')")
    return v


NodeId = Annotated[str, AfterValidator(_node_id)]
PublicKey = Annotated[str, AfterValidator(_public_key)]  # a node's public key (KEY_FIELDS), published or not


class NodeEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: NodeId
    address: str
    name: str | None = None
    # the region's 6-digit administrative division code: its first two digits are its province, by which node
    # policies admit askers from this region (``askers:``); without it the region is in no province
    code: str | None = None
    audit_key: PublicKey | None = None  # the node's Ed25519 audit public key, raw 32 bytes in base64
    agreement_key: PublicKey | None = None  # the node's X25519 agreement public key (person lookups), base64

    @field_validator("code", mode="before")
    @classmethod
    def _code(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):  # code: 320500, unquoted in YAML
            v = str(v)
        return check_region_code(v) if isinstance(v, str) else v

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"address {v!r} must be host:port, e.g. 127.0.0.1:50051")
        return v


class NodeKeys(BaseModel):
    """One node's public keys, as ``hpf node keys`` prints them for the catalog (``hpf catalog keys``)."""

    model_config = ConfigDict(extra="forbid")
    node: NodeId
    audit_key: PublicKey
    agreement_key: PublicKey


class IssuerEntry(BaseModel):
    """A consent issuer (a centre's consent service) whose grants regions may accept, as their policies say."""

    model_config = ConfigDict(extra="forbid")
    id: NodeId
    key: str  # the issuer's Ed25519 public key, raw 32 bytes in base64 (`hpf consent keys` prints it)
    name: str | None = Field(default=None, max_length=200)

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if key_bytes(v) is None:
            raise ValueError("key must be the issuer's 32-byte Ed25519 public key in base64 (`hpf consent keys`)")
        return v
