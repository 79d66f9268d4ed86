"""The records of a node's audit log and their one byte form: entries, checkpoints and receipts.

An entry is a flat mapping written as :func:`canonical_json`; a :class:`Checkpoint` is the node's signed
statement of the tree head of its first ``size`` entries; a :class:`Receipt` is an entry with the checkpoint
that covers it. Here are their byte forms, both ways: what the node writes (:mod:`federation.audit.log`) and
the checks that read a line back (:func:`first_entry_problem`, :func:`parse_checkpoint_line`), which
:mod:`federation.audit.verify` runs over a whole log.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hpf.federation.audit import merkle
from hpf.federation.errors import AuditError

ENTRIES = "entries.jsonl"
CHECKPOINTS = "checkpoints.jsonl"
CHECKPOINT_DOMAIN = b"hpf-audit-checkpoint/v1\n"

Scalar = str | int | bool | None

_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_HEX_ROOT = re.compile(r"[0-9a-f]{64}")
_CHECKPOINT_LINE = re.compile(
    rb'\{"node_id":"([A-Za-z0-9][A-Za-z0-9._-]{0,63})","root":"([0-9a-f]{64})","signature":"([A-Za-z0-9+/]{86}==)",'
    rb'"size":(0|[1-9][0-9]{0,17}),"time":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)"\}'
)
_SCALAR_TYPES = frozenset({str, int, bool, type(None)})
_DECODER = json.JSONDecoder()
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def is_node_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` can name a node in an audit log: a letter or digit, then up to 63 of ``A-Za-z0-9._-``.

    >>> is_node_id("hangzhou"), is_node_id("-x"), is_node_id(3)
    (True, False, False)
    """
    return isinstance(value, str) and _NODE_ID.fullmatch(value) is not None


def canonical_json(obj: Mapping[str, Scalar]) -> bytes:
    """The one byte form of a flat entry: sorted keys, no spaces, UTF-8; values str, int, bool or None.

    >>> canonical_json({"b": 1, "a": "中", "c": None, "d": True})
    b'{"a":"\\xe4\\xb8\\xad","b":1,"c":null,"d":true}'
    >>> canonical_json({"x": 1.5})
    Traceback (most recent call last):
    ...
    hpf.federation.errors.AuditError: [AUDIT_FIELD_INVALID] field 'x': a float is not allowed in an audit entry ...
    """
    if not isinstance(obj, Mapping):
        raise AuditError("an audit entry is a flat mapping of names to values", code="AUDIT_FIELD_INVALID")
    clean: dict[str, Scalar] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise AuditError(f"field name {key!r} is not a string", code="AUDIT_FIELD_INVALID")
        kind = type(value)
        if value is None or kind is str or kind is int or kind is bool:
            clean[key] = value
        elif isinstance(value, str):  # a str-valued enum: its plain string
            clean[key] = str.__str__(value)
        elif isinstance(value, int):  # an IntEnum: its plain integer
            clean[key] = int(value)
        else:
            raise AuditError(
                f"field {key!r}: a {kind.__name__} is not allowed in an audit entry "
                "(use a string, an integer, a boolean or null)",
                code="AUDIT_FIELD_INVALID",
            )
    try:
        return _ENCODER.encode(clean).encode("utf-8")
    except UnicodeEncodeError:
        raise AuditError("an audit entry holds text that is not valid Unicode", code="AUDIT_FIELD_INVALID") from None


def node_problem(fields: Mapping[str, object], node: str, holder: str = "this log") -> str | None:
    """Why an entry's ``"node"`` is not ``node`` (None when it is): every entry names the node whose log holds it.

    >>> node_problem({"node": "hangzhou"}, "hangzhou") is None, node_problem({"node": "suzhou"}, "hangzhou")
    (True, "the entry is node suzhou's, this log is node hangzhou's")
    >>> node_problem({}, "hangzhou")
    "the entry names no node, this log is node hangzhou's"
    """
    named = fields.get("node")
    if named == node:
        return None
    if named is None:
        return f"the entry names no node, {holder} is node {node}'s"
    if not is_node_id(named):
        return f"the entry's node is not a node id, {holder} is node {node}'s"
    return f"the entry is node {named}'s, {holder} is node {node}'s"


def _entry_problem(line: bytes, index: int, node: str | None = None) -> tuple[str, str] | None:
    """Why one entry line is not the canonical entry ``index`` of ``node``'s log (None when it is)."""
    try:
        fields = json.loads(line)
    except (ValueError, RecursionError):
        return "AUDIT_ENTRY_MALFORMED", "the line is not JSON"
    if not isinstance(fields, dict):
        return "AUDIT_ENTRY_MALFORMED", "the line is not a JSON object"
    odd = sorted(k for k, v in fields.items() if type(v) not in _SCALAR_TYPES)
    if odd:
        return "AUDIT_ENTRY_MALFORMED", f"field {odd[0]!r} is not a string, integer, boolean or null"
    position = fields.get("index")
    if type(position) is not int:
        return "AUDIT_ENTRY_MALFORMED", "the entry has no integer index"
    if line != canonical_json(fields):
        return "AUDIT_ENTRY_NOT_CANONICAL", "the line is not in canonical form (edited by hand?)"
    if position != index:
        return "AUDIT_INDEX_MISMATCH", f"the line says it is entry {position} (entries deleted or reordered)"
    if node is not None and (problem := node_problem(fields, node)):
        return "AUDIT_NODE_MISMATCH", problem
    return None


def first_entry_problem(lines: list[bytes], base: int, node: str | None = None) -> tuple[int, str, str] | None:
    """The first of ``lines`` (entries ``base``, ``base + 1``, ...) that is not its canonical entry of ``node``'s
    log (every entry names it as ``"node"``; None: not checked), as (index, code, problem); None when all are.
    Fast when all are good.

    Each line is parsed on its own; when every one is a flat object with the right index and the canonical
    dump of them all equals the lines joined, every line is canonical: a dump that started where its line
    starts but ended earlier or later would make that line unparseable or more than one object.
    """
    try:
        strs = b"\n".join(lines).decode("utf-8").split("\n")
        objs, index, raw = [], base, _DECODER.raw_decode
        for text in strs:
            obj, end = raw(text)
            if (
                end != len(text)
                or type(obj) is not dict
                or type(obj.get("index")) is not int
                or obj["index"] != index
                or (node is not None and obj.get("node") != node)
                or not _SCALAR_TYPES.issuperset(map(type, obj.values()))
            ):
                raise ValueError
            objs.append(obj)
            index += 1
        if len(strs) == len(lines) and _ENCODER.encode(objs) == "[" + ",".join(strs) + "]":
            return None
    except (ValueError, RecursionError):  # JSON and UTF-8 errors are ValueErrors
        pass
    for offset, line in enumerate(lines):
        if problem := _entry_problem(line, base + offset, node):
            return base + offset, *problem
    return None


def utc_now() -> str:
    """Now as RFC 3339 UTC with milliseconds, e.g. ``2026-11-28T08:30:10.123Z``."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str, code: str) -> bytes:
    if not isinstance(text, str):
        raise AuditError(f"{what} is not base64 text", code=code)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise AuditError(f"{what} is not valid base64", code=code) from None


@dataclass(frozen=True)
class Checkpoint:
    """A node's signed statement: its first ``size`` entries have Merkle tree head ``root``."""

    node_id: str
    size: int
    root: bytes
    time: str
    signature: bytes

    def signed_message(self) -> bytes:
        """What the signature covers: a domain tag, then node, size, root (hex) and time, one per line."""
        return CHECKPOINT_DOMAIN + f"{self.node_id}\n{self.size}\n{self.root.hex()}\n{self.time}\n".encode()

    def is_signed_by(self, public_key: Ed25519PublicKey) -> bool:
        """Whether ``public_key`` made this checkpoint's signature."""
        try:
            public_key.verify(self.signature, self.signed_message())
        except InvalidSignature:
            return False
        return True

    def verify(self, public_key: Ed25519PublicKey) -> None:
        """Raise AuditError ``AUDIT_CHECKPOINT_SIGNATURE`` unless ``public_key`` signed this checkpoint."""
        if not self.is_signed_by(public_key):
            raise AuditError(
                f"the checkpoint of size {self.size} ({self.time}) is not signed by the node's audit key",
                code="AUDIT_CHECKPOINT_SIGNATURE",
            )

    def to_dict(self) -> dict[str, str | int]:
        return {
            "node_id": self.node_id,
            "size": self.size,
            "root": self.root.hex(),
            "time": self.time,
            "signature": _b64(self.signature),
        }

    @classmethod
    def from_dict(cls, data: object) -> Checkpoint:
        """Read a checkpoint; AuditError ``AUDIT_CHECKPOINT_MALFORMED`` names the field that is wrong."""
        code = "AUDIT_CHECKPOINT_MALFORMED"
        if not isinstance(data, dict):
            raise AuditError("a checkpoint is a JSON object", code=code)
        node_id, size, root, time = data.get("node_id"), data.get("size"), data.get("root"), data.get("time")
        if not is_node_id(node_id):
            raise AuditError("checkpoint field node_id is missing or not a node id", code=code)
        if type(size) is not int or size < 0:
            raise AuditError("checkpoint field size is not a non-negative integer", code=code)
        if not isinstance(root, str) or not _HEX_ROOT.fullmatch(root):
            raise AuditError("checkpoint field root is not 64 lower-case hex digits", code=code)
        if not isinstance(time, str) or not _TIME.fullmatch(time):
            raise AuditError("checkpoint field time is not RFC 3339 UTC with milliseconds", code=code)
        signature = _unb64(data.get("signature"), "checkpoint field signature", code)
        if len(signature) != 64:
            raise AuditError("checkpoint field signature is not an Ed25519 signature", code=code)
        return cls(node_id, size, bytes.fromhex(root), time, signature)


def first_bad_signature(key: Ed25519PublicKey, batch: list[tuple[int, int, Checkpoint]]) -> tuple[int, int, int] | None:
    """The first (line, previous size, size) in ``batch`` whose signature fails; runs in a worker thread
    (cryptography releases the GIL while it verifies)."""
    for lineno, prev, cp in batch:
        if not cp.is_signed_by(key):
            return lineno, prev, cp.size
    return None


def checkpoint_line(cp: Checkpoint) -> bytes:
    """A checkpoint as its line in ``checkpoints.jsonl``: its canonical JSON and a newline."""
    return canonical_json(cp.to_dict()) + b"\n"


def parse_checkpoint_line(line: bytes) -> Checkpoint | str:
    """A line of ``checkpoints.jsonl`` (without its newline) as a checkpoint, or why it is not one."""
    if m := _CHECKPOINT_LINE.fullmatch(line):  # the form we write, without a JSON round trip
        node, root, signature, size, time = m.groups()
        return Checkpoint(
            node.decode(), int(size), bytes.fromhex(root.decode()), time.decode(), base64.b64decode(signature)
        )
    try:
        return Checkpoint.from_dict(json.loads(line))
    except (ValueError, RecursionError):
        return "not JSON"
    except AuditError as err:
        return err.message


MAX_PROOF_HASHES = 64  # an inclusion proof in a tree of up to 2**64 entries


@dataclass(frozen=True)
class Receipt:
    """What a node hands back with an answer: the entry it logged, the checkpoint that covers it, and the RFC 9162
    inclusion proof of the entry in that checkpoint's tree, which binds the entry to what the node signed.

    ``inclusion`` is None for a receipt kept before receipts carried a proof: its checkpoint is the node's, but
    nothing shows its entry is the one the node logged (:meth:`proves_entry`)."""

    node_id: str
    index: int
    entry: bytes  # the canonical JSON line, exactly as logged
    checkpoint: Checkpoint
    inclusion: tuple[bytes, ...] | None = None

    @property
    def leaf_hash(self) -> bytes:
        return merkle.leaf_hash(self.entry)

    def proves_entry(self) -> bool:
        """Whether the receipt's own proof shows its entry at its index in the tree its checkpoint signs (False
        without a proof). The checkpoint's signature is checked apart (:meth:`Checkpoint.verify`)."""
        return self.inclusion is not None and merkle.verify_inclusion(
            self.leaf_hash, self.index, self.checkpoint.size, self.inclusion, self.checkpoint.root
        )

    def fields(self) -> dict[str, Any]:
        return dict(json.loads(self.entry))

    def check(self, public_key: Ed25519PublicKey, proof: Sequence[bytes] | None = None) -> None:
        """Raise AuditError unless the receipt is whole and signed, and (with ``proof``) its entry is included.

        ``proof`` is the inclusion proof of ``index`` in the checkpoint's tree
        (:meth:`federation.audit.log.AuditLog.inclusion_proof`).
        """
        self.checkpoint.verify(public_key)
        if problem := self.problem():
            raise AuditError(problem, code="AUDIT_RECEIPT_MISMATCH")
        if proof is not None and not merkle.verify_inclusion(
            self.leaf_hash, self.index, self.checkpoint.size, proof, self.checkpoint.root
        ):
            raise AuditError(
                f"entry {self.index} is not in the tree the checkpoint signs", code="AUDIT_RECEIPT_MISMATCH"
            )

    def names(self, node_id: str) -> bool:
        """Whether anything in the receipt says it is ``node_id``'s: its label, its checkpoint or its entry. A
        client's receipts file holds every region's receipts; a check of one region's log takes those that name
        it anywhere, so a receipt relabelled away from the region is still checked (and fails) rather than
        skipped."""
        if node_id in (self.node_id, self.checkpoint.node_id):
            return True
        try:
            fields = json.loads(self.entry)
        except (ValueError, RecursionError):
            return False
        return isinstance(fields, dict) and fields.get("node") == node_id

    def problem(self) -> str | None:
        """Why the receipt does not hold together (None when it does): its node (the receipt's, its checkpoint's
        and its entry's are one), its index or its entry."""
        if self.node_id != self.checkpoint.node_id:
            return f"the receipt is for node {self.node_id} but its checkpoint for {self.checkpoint.node_id}"
        if not 0 <= self.index < self.checkpoint.size:
            return f"entry {self.index} is not covered by the receipt's checkpoint (size {self.checkpoint.size})"
        try:
            fields = json.loads(self.entry)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return f"the receipt's entry {self.index} is not JSON"
        if not isinstance(fields, dict) or fields.get("index") != self.index:
            return f"the receipt's entry does not carry index {self.index}"
        if problem := node_problem(fields, self.node_id, "the receipt"):
            return problem
        return None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "node_id": self.node_id,
            "index": self.index,
            "entry": self.entry.decode("utf-8"),
            "checkpoint": self.checkpoint.to_dict(),
        }
        if self.inclusion is not None:
            out["inclusion"] = [h.hex() for h in self.inclusion]
        return out

    @classmethod
    def from_dict(cls, data: object) -> Receipt:
        """Read a kept receipt; one kept before receipts carried a proof has no ``inclusion`` (None here)."""
        code = "AUDIT_RECEIPT_MALFORMED"
        if not isinstance(data, dict):
            raise AuditError("a receipt is a JSON object", code=code)
        node_id, index, entry = data.get("node_id"), data.get("index"), data.get("entry")
        if not isinstance(node_id, str) or type(index) is not int or index < 0 or not isinstance(entry, str):
            raise AuditError("a receipt needs node_id (text), index (integer) and entry (text)", code=code)
        proof = data.get("inclusion")
        inclusion = None
        if proof is not None:
            if (
                not isinstance(proof, list)
                or len(proof) > MAX_PROOF_HASHES
                or not all(isinstance(h, str) and _HEX_ROOT.fullmatch(h) for h in proof)
            ):
                raise AuditError("the receipt's inclusion is not a list of 64-hex-digit hashes", code=code)
            inclusion = tuple(bytes.fromhex(h) for h in proof)
        try:
            checkpoint = Checkpoint.from_dict(data.get("checkpoint"))
            return cls(node_id, index, entry.encode("utf-8"), checkpoint, inclusion)
        except AuditError as err:
            raise AuditError(f"the receipt's {err.message}", code=code) from None
        except UnicodeEncodeError:
            raise AuditError("the receipt's entry is not valid Unicode text", code=code) from None
