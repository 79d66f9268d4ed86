"""A node's tamper-evident audit log: an RFC 6962 Merkle log of requests with Ed25519-signed checkpoints.

Every request a node sees, allowed or refused, is one entry. On disk, in the log's directory:

- ``entries.jsonl``: one entry per line, the exact bytes of :func:`canonical_json` (sorted keys, no spaces,
  UTF-8); entry ``i`` carries ``"index": i``. A leaf of the Merkle tree is ``leaf_hash(line)``.
- ``checkpoints.jsonl``: after every append, one signed checkpoint ``(node_id, size, root, time)`` for the
  new size: the node's signed statement that its first ``size`` entries have tree head ``root``.
- ``audit.key``: the node's Ed25519 signing key (PKCS#8 PEM, mode 0600), made on first open;
  ``audit.pub``: its public half (SubjectPublicKeyInfo PEM). An auditor pins the key they got from the node's
  operator or the catalog (:meth:`AuditLog.public_key_b64`), never the copy beside the log.

Each answer the node returns carries a :class:`Receipt` (the entry and the checkpoint that covers it), so a
client or an auditor holding a receipt or an older checkpoint detects a log that was later rewritten or cut
short (:func:`verify_log`), even by someone holding the node's key. Without an outside checkpoint, the log's
own checkpoints detect any edit, deletion, reordering or truncation of entries by someone without the key.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import threading
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from federation import merkle
from federation.errors import AuditError
from federation.pki import write_file

ENTRIES = "entries.jsonl"
CHECKPOINTS = "checkpoints.jsonl"
KEY = "audit.key"
PUBLIC_KEY = "audit.pub"
CHECKPOINT_DOMAIN = b"hpf-audit-checkpoint/v1\n"

Scalar = str | int | bool | None

_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_HEX_ROOT = re.compile(r"[0-9a-f]{64}")
_SCALAR_TYPES = frozenset({str, int, bool, type(None)})
_DECODER = json.JSONDecoder()
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(obj: Mapping[str, Scalar]) -> bytes:
    """The one byte form of a flat entry: sorted keys, no spaces, UTF-8; values str, int, bool or None.

    >>> canonical_json({"b": 1, "a": "中", "c": None, "d": True})
    b'{"a":"\\xe4\\xb8\\xad","b":1,"c":null,"d":true}'
    >>> canonical_json({"x": 1.5})
    Traceback (most recent call last):
    ...
    federation.errors.AuditError: [AUDIT_FIELD_INVALID] field 'x': a float is not allowed in an audit entry ...
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

    def verify(self, public_key: Ed25519PublicKey) -> None:
        """Raise AuditError ``AUDIT_CHECKPOINT_SIGNATURE`` unless ``public_key`` signed this checkpoint."""
        try:
            public_key.verify(self.signature, self.signed_message())
        except InvalidSignature:
            raise AuditError(
                f"the checkpoint of size {self.size} ({self.time}) is not signed by the node's audit key",
                code="AUDIT_CHECKPOINT_SIGNATURE",
            ) from None

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
        if not isinstance(node_id, str) or not _NODE_ID.fullmatch(node_id):
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


def checkpoint_line(cp: Checkpoint) -> bytes:
    """A checkpoint as its line in ``checkpoints.jsonl``: ``canonical_json(cp.to_dict())`` and a newline."""
    return (
        f'{{"node_id":"{cp.node_id}","root":"{cp.root.hex()}","signature":"{_b64(cp.signature)}",'
        f'"size":{cp.size},"time":"{cp.time}"}}\n'
    ).encode()


@dataclass(frozen=True)
class Receipt:
    """What a node hands back with an answer: the entry it logged and the checkpoint that covers it."""

    node_id: str
    index: int
    entry: bytes  # the canonical JSON line, exactly as logged
    checkpoint: Checkpoint

    @property
    def leaf_hash(self) -> bytes:
        return merkle.leaf_hash(self.entry)

    def fields(self) -> dict[str, Any]:
        return dict(json.loads(self.entry))

    def check(self, public_key: Ed25519PublicKey, proof: Sequence[bytes] | None = None) -> None:
        """Raise AuditError unless the receipt is whole and signed, and (with ``proof``) its entry is included.

        ``proof`` is the inclusion proof of ``index`` in the checkpoint's tree (``AuditLog.inclusion_proof``).
        """
        self.checkpoint.verify(public_key)
        if problem := self._problem():
            raise AuditError(problem, code="AUDIT_RECEIPT_MISMATCH")
        if proof is not None and not merkle.verify_inclusion(
            self.leaf_hash, self.index, self.checkpoint.size, proof, self.checkpoint.root
        ):
            raise AuditError(
                f"entry {self.index} is not in the tree the checkpoint signs", code="AUDIT_RECEIPT_MISMATCH"
            )

    def _problem(self) -> str | None:
        if self.node_id != self.checkpoint.node_id:
            return f"the receipt is for node {self.node_id} but its checkpoint for {self.checkpoint.node_id}"
        if not 0 <= self.index < self.checkpoint.size:
            return f"entry {self.index} is not covered by the receipt's checkpoint (size {self.checkpoint.size})"
        try:
            fields = json.loads(self.entry)
        except (ValueError, UnicodeDecodeError):
            return f"the receipt's entry {self.index} is not JSON"
        if not isinstance(fields, dict) or fields.get("index") != self.index:
            return f"the receipt's entry does not carry index {self.index}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "index": self.index,
            "entry": self.entry.decode("utf-8"),
            "checkpoint": self.checkpoint.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: object) -> Receipt:
        code = "AUDIT_RECEIPT_MALFORMED"
        if not isinstance(data, dict):
            raise AuditError("a receipt is a JSON object", code=code)
        node_id, index, entry = data.get("node_id"), data.get("index"), data.get("entry")
        if not isinstance(node_id, str) or type(index) is not int or index < 0 or not isinstance(entry, str):
            raise AuditError("a receipt needs node_id (text), index (integer) and entry (text)", code=code)
        try:
            checkpoint = Checkpoint.from_dict(data.get("checkpoint"))
            return cls(node_id, index, entry.encode("utf-8"), checkpoint)
        except AuditError as err:
            raise AuditError(f"the receipt's {err.message}", code=code) from None
        except UnicodeEncodeError:
            raise AuditError("the receipt's entry is not valid Unicode text", code=code) from None


def load_public_key(text: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from SubjectPublicKeyInfo PEM or the raw 32 bytes in base64."""
    data = text.encode() if isinstance(text, str) else text
    code = "AUDIT_KEY_INVALID"
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_public_key(data)
            if not isinstance(key, Ed25519PublicKey):
                raise AuditError("the public key is not an Ed25519 key", code=code)
            return key
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(), validate=True))
    except (ValueError, TypeError, UnsupportedAlgorithm, binascii.Error):
        raise AuditError("not an Ed25519 public key (PEM, or 32 bytes in base64)", code=code) from None


def _public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# ---------------------------------------------------------------------------------------------------------------
# Verification: one streaming pass over entries and checkpoints.


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify_log` found. ``first_bad`` is the first entry that cannot be trusted (None when the
    problem implicates no single entry, e.g. an outside checkpoint that does not match the log)."""

    ok: bool
    entries: int
    checkpoints: int
    first_bad: int | None
    code: str | None
    problem: str | None
    key_pinned: bool
    node_id: str | None = None
    root: bytes = merkle.EMPTY_ROOT  # head of the entries read
    latest: Checkpoint | None = None  # the last checkpoint read
    unsigned: int = 0  # entries after the latest checkpoint (a crash between the two writes leaves one)

    @property
    def message(self) -> str:
        where = f"entry {self.first_bad}: " if self.first_bad is not None else ""
        return where + (self.problem or "ok")

    def error(self) -> AuditError | None:
        return None if self.ok else AuditError(self.message, code=self.code or "AUDIT_INVALID")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "first_bad": self.first_bad,
            "code": self.code,
            "problem": self.problem,
            "key_pinned": self.key_pinned,
            "node_id": self.node_id,
            "root": self.root.hex(),
            "latest": self.latest.to_dict() if self.latest else None,
            "unsigned": self.unsigned,
        }


# Where a problem sits in the pass: (entries read, 0: a check on a checkpoint of that size | 1: a check on the
# entry with that index, tie-break). The earliest wins, so first_bad is the first entry that cannot be trusted.
_Key = tuple[int, int, int]
_OUTSIDE = 1 << 40  # outside checkpoints (older, receipts) come after the log's own of the same size

_CHECKPOINT_LINE = re.compile(
    rb'\{"node_id":"([A-Za-z0-9][A-Za-z0-9._-]{0,63})","root":"([0-9a-f]{64})","signature":"([A-Za-z0-9+/]{86}==)",'
    rb'"size":(0|[1-9][0-9]{0,17}),"time":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)"\}'
)


@dataclass(order=True)
class _Problem:
    key: _Key
    code: str = field(compare=False)
    first_bad: int | None = field(compare=False)
    text: str = field(compare=False)


def _line_chunks(path: Path, block: int = 1 << 20) -> Iterator[tuple[list[bytes], bool]]:
    """Complete lines in chunks; a last line without its newline comes alone, flagged torn."""
    with path.open("rb") as fh:
        rest = b""
        while data := fh.read(block):
            data = rest + data
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            yield data[:cut].split(b"\n"), False
            rest = data[cut + 1 :]
        if rest:
            yield [rest], True


def _parse_checkpoint(line: bytes) -> Checkpoint | str:
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


def _entry_problem(line: bytes, index: int) -> tuple[str, str] | None:
    """Why one entry line is not the canonical entry ``index`` (None when it is)."""
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
    return None


def _first_entry_problem(lines: list[bytes], base: int) -> tuple[int, str, str] | None:
    """The first bad line of a chunk, fast when all are good.

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
        if problem := _entry_problem(line, base + offset):
            return base + offset, *problem
    return None


def _bad_signature(key: Ed25519PublicKey, batch: list[tuple[int, int, Checkpoint]]) -> tuple[int, int, int] | None:
    """The first (line, previous size, size) in ``batch`` whose signature fails; runs in a worker thread
    (cryptography releases the GIL while it verifies)."""
    for lineno, prev, cp in batch:
        try:
            key.verify(cp.signature, cp.signed_message())
        except InvalidSignature:
            return lineno, prev, cp.size
    return None


class _Scan:
    """One pass over a log directory: entries, the log's checkpoints, an older checkpoint, receipts."""

    def __init__(
        self,
        directory: Path,
        key: Ed25519PublicKey,
        *,
        older: Checkpoint | None = None,
        receipts: Sequence[Receipt] = (),
        node_id: str | None = None,
        sink: Callable[[bytes, int], None] | None = None,
        all_signatures: bool = True,
    ) -> None:
        self.directory, self.key, self.node_id, self.sink = directory, key, node_id, sink
        self.all_signatures = all_signatures
        self.workers = min(8, os.cpu_count() or 1)
        self.range = merkle.CompactRange()
        self.problem: _Problem | None = None
        self.n = 0  # entries read
        self.checkpoints = 0
        self.latest: Checkpoint | None = None
        self.head: tuple[int, bytes] = (0, merkle.EMPTY_ROOT)
        self.older = older
        self.outside: dict[int, list[tuple[int, str, Checkpoint]]] = {}  # size -> (tie, what, checkpoint)
        self.receipt_entries: dict[int, list[tuple[int, Receipt]]] = {}
        for tie, receipt in enumerate(receipts):
            self._add_receipt(tie, receipt)
        if older is not None:
            if not self._signed(older):
                self.fail((-1, 0, 0), "AUDIT_CHECKPOINT_SIGNATURE", None, f"{self._what(older)} is not signed")
            self.outside.setdefault(older.size, []).append((_OUTSIDE, "older", older))
        self.events = sorted({*self.outside, *(i + 1 for i in self.receipt_entries)})
        self.stream = self._checkpoint_stream()
        self.next = next(self.stream, None)
        self.batch: list[tuple[int, int, Checkpoint]] = []
        self.pending: deque[Future[tuple[int, int, int] | None]] = deque()

    def _signed(self, cp: Checkpoint) -> bool:
        try:
            self.key.verify(cp.signature, cp.signed_message())
        except InvalidSignature:
            return False
        return True

    def _add_receipt(self, tie: int, receipt: Receipt) -> None:
        what = f"receipt {tie + 1} (entry {receipt.index})"
        if not self._signed(receipt.checkpoint):
            self.fail((-1, 1, tie), "AUDIT_CHECKPOINT_SIGNATURE", None, f"{what}: its checkpoint is not signed")
        elif problem := receipt._problem():
            self.fail((-1, 1, tie), "AUDIT_RECEIPT_MISMATCH", None, f"{what}: {problem}")
        else:
            self.receipt_entries.setdefault(receipt.index, []).append((tie, receipt))
            self.outside.setdefault(receipt.checkpoint.size, []).append((_OUTSIDE + 1 + tie, what, receipt.checkpoint))

    def _what(self, cp: Checkpoint, what: str = "older") -> str:
        if what == "older":
            return f"the saved checkpoint (size {cp.size}, {cp.time})"
        return f"{what}: its checkpoint"

    def fail(self, key: _Key, code: str, first_bad: int | None, text: str) -> bool:
        if self.problem is None or key < self.problem.key:
            self.problem = _Problem(key, code, first_bad, text)
        return True

    def _checkpoint_stream(self) -> Iterator[tuple[int, Checkpoint | str]]:
        path = self.directory / CHECKPOINTS
        if not path.exists():
            return
        lineno = 0
        for lines, torn in _line_chunks(path):
            for line in lines:
                lineno += 1
                yield lineno, "the line is incomplete" if torn else _parse_checkpoint(line)

    def _root(self, n: int) -> bytes:
        if self.head[0] != n:
            self.head = (n, self.range.root())
        return self.head[1]

    def _due(self) -> int:
        """How many entries must be read before the next check."""
        i = bisect.bisect_right(self.events, self.n)
        due = self.events[i] if i < len(self.events) else -1
        if self.next is not None and isinstance(self.next[1], Checkpoint) and (due < 0 or self.next[1].size < due):
            due = self.next[1].size
        return due

    def _at(self, n: int, line: bytes | None) -> bool:
        """Every check due once ``n`` entries are read (``line`` the last); True to stop."""
        for tie, receipt in self.receipt_entries.get(n - 1, ()) if line is not None else ():
            if receipt.entry != line:
                text = f"the log's entry differs from receipt {tie + 1}'s"
                return self.fail((n - 1, 1, 1), "AUDIT_RECEIPT_MISMATCH", n - 1, text)
        prev = self.latest.size if self.latest else 0
        while self.next is not None:
            lineno, cp = self.next
            key = (n, 0, lineno)
            if isinstance(cp, str):
                return self.fail(key, "AUDIT_CHECKPOINT_MALFORMED", prev, f"checkpoint {lineno}: {cp}")
            if cp.size < prev:
                text = f"checkpoint {lineno} (size {cp.size}) comes after one of size {prev}"
                return self.fail(key, "AUDIT_CHECKPOINT_ORDER", cp.size, text)
            if cp.size > n:
                break
            node = self.node_id or (self.latest.node_id if self.latest else cp.node_id)
            if cp.node_id != node:
                text = f"checkpoint {lineno} is node {cp.node_id}'s, this log is node {node}'s"
                return self.fail(key, "AUDIT_NODE_MISMATCH", prev, text)
            if cp.root != self._root(n):
                what = "the entry differs" if prev >= n - 1 else f"entries {prev}..{n - 1} differ"
                text = f"{what} from what checkpoint {lineno} (size {n}, {cp.time}) signed"
                return self.fail(key, "AUDIT_ROOT_MISMATCH", min(prev, max(n - 1, 0)), text)
            if self.all_signatures:
                self.batch.append((lineno, prev, cp))
            self.checkpoints += 1
            self.latest, prev = cp, cp.size
            self.next = next(self.stream, None)
        for tie, what, cp in self.outside.get(n, ()):
            if cp.root != self._root(n) or (self.latest is not None and cp.node_id != self.latest.node_id):
                code = "AUDIT_INCONSISTENT" if what == "older" else "AUDIT_RECEIPT_MISMATCH"
                text = f"{self._what(cp, what)} does not match entries 0..{n - 1}: the log was rewritten"
                return self.fail((n, 0, tie), code, None, text)
        return False

    def _entries(self, pool: ThreadPoolExecutor) -> None:
        path = self.directory / ENTRIES
        sha, append, sink, n = hashlib.sha256, self.range.append, self.sink, 0
        for lines, torn in _line_chunks(path):
            bad = (
                (n, "AUDIT_ENTRY_MALFORMED", "the last line is incomplete") if torn else _first_entry_problem(lines, n)
            )
            due = self._due()
            for line in lines if bad is None else lines[: bad[0] - n]:
                leaf = sha(b"\x00" + line).digest()
                append(leaf)
                if sink is not None:
                    sink(leaf, len(line) + 1)
                n += 1
                if n == due:
                    self.n = n
                    if self._at(n, line):
                        return
                    due = self._due()
            self.n = n
            if bad is not None:
                self.fail((bad[0], 1, 0), bad[1], bad[0], bad[2])
                return
            self._submit(pool)

    def _submit(self, pool: ThreadPoolExecutor, *, drain: bool = False) -> None:
        while len(self.batch) >= 256 or (drain and self.batch):
            self.pending.append(pool.submit(_bad_signature, self.key, self.batch[:256]))
            del self.batch[:256]
        while self.pending and (drain or len(self.pending) > 4 * self.workers):
            if failed := self.pending.popleft().result():
                lineno, prev, size = failed
                text = f"checkpoint {lineno} (size {size}) is not signed by the node's audit key"
                self.fail((size, 0, lineno), "AUDIT_CHECKPOINT_SIGNATURE", min(prev, max(size - 1, 0)), text)

    def _finish(self) -> None:
        """After the last entry: anything still waiting for entries means the log was cut short."""
        n = self.n
        if self.next is not None:
            lineno, cp = self.next
            if isinstance(cp, str):
                prev = self.latest.size if self.latest else 0
                self.fail(
                    (n, 0, lineno),
                    "AUDIT_CHECKPOINT_MALFORMED",
                    prev if prev < n else None,
                    f"checkpoint {lineno}: {cp}",
                )
            else:
                text = f"missing: the log ends after {n} entries but checkpoint {lineno} signed {cp.size}"
                self.fail((n, 0, lineno), "AUDIT_TRUNCATED", n, text)
        for size in (s for s in self.events if s > n):
            for tie, what, cp in self.outside.get(size, ()):
                text = f"missing: the log ends after {n} entries but {self._what(cp, what)} covers {size}"
                self.fail((n, 0, tie), "AUDIT_TRUNCATED", n, text)

    def run(self) -> VerifyReport:
        if self.problem is None:
            with ThreadPoolExecutor(self.workers) as pool:
                if not self._at(0, None) and (self.directory / ENTRIES).exists():
                    self._entries(pool)
                if self.problem is None:
                    self._finish()
                self._submit(pool, drain=True)
            if not self.all_signatures and self.latest is not None and not self._signed(self.latest):
                text = f"the latest checkpoint (size {self.latest.size}) is not signed by the node's audit key"
                self.fail((self.latest.size, 0, 0), "AUDIT_CHECKPOINT_SIGNATURE", max(self.latest.size - 1, 0), text)
        p, n = self.problem, self.n
        return VerifyReport(
            ok=p is None,
            entries=n,
            checkpoints=self.checkpoints,
            first_bad=p.first_bad if p else None,
            code=p.code if p else None,
            problem=p.text if p else None,
            key_pinned=True,
            node_id=self.latest.node_id if self.latest else self.node_id,
            root=self._root(n),
            latest=self.latest,
            unsigned=0 if p else n - (self.latest.size if self.latest else 0),
        )


def _not_found(directory: Path, text: str) -> VerifyReport:
    return VerifyReport(False, 0, 0, None, "AUDIT_NOT_FOUND", f"{directory}: {text}", False)


def verify_log(
    directory: Path,
    public_key: Ed25519PublicKey | None = None,
    older: Checkpoint | None = None,
    receipts: Sequence[Receipt] = (),
    *,
    check_all_signatures: bool = True,
) -> VerifyReport:
    """Check a log directory in one pass; ``ok`` is False with the first problem found.

    Checks: every entry line is canonical JSON carrying its position as ``index``; every checkpoint is
    signed by the key (``public_key``, else the directory's own ``audit.pub``: then ``key_pinned`` is
    False), sizes never decrease, none is larger than the log (``AUDIT_TRUNCATED``), each root is the head
    of that prefix; ``older`` (a checkpoint saved earlier by an auditor or client) and each receipt's
    checkpoint match the same prefix, and each receipt's entry is the log's entry at its index.

    Ed25519 verification (about 70 µs a checkpoint, spread over the CPUs) dominates a log with a checkpoint
    per entry; ``check_all_signatures=False`` still checks every root, but only the latest checkpoint's
    signature (which alone vouches for every entry), about 4 times faster.
    """
    directory = Path(directory)
    if not (directory / ENTRIES).is_file() and not (directory / CHECKPOINTS).is_file():
        return _not_found(directory, f"no audit log here (no {ENTRIES})")
    pinned = public_key is not None
    if public_key is None:
        try:
            public_key = load_public_key((directory / PUBLIC_KEY).read_bytes())
        except OSError:
            return _not_found(directory, f"{PUBLIC_KEY} is missing: pass the node's public key")
        except AuditError as err:
            return VerifyReport(False, 0, 0, None, err.code, f"{directory / PUBLIC_KEY}: {err.message}", False)
    report = _Scan(directory, public_key, older=older, receipts=receipts, all_signatures=check_all_signatures).run()
    return report if pinned else dataclasses.replace(report, key_pinned=False)


def read_entries(directory: Path, start: int = 0) -> Iterator[dict[str, Any]]:
    """The entries of a log directory as dicts, without checking them (``verify_log`` does that)."""
    path = Path(directory) / ENTRIES
    if not path.is_file():
        raise AuditError(f"{directory}: no audit log here ({ENTRIES} is missing)", code="AUDIT_NOT_FOUND")
    index = 0
    for lines, _ in _line_chunks(path):
        for line in lines:
            if index >= start:
                try:
                    fields = json.loads(line)
                except (ValueError, UnicodeDecodeError):
                    fields = None
                if not isinstance(fields, dict):
                    hint = "run `hpf audit verify` on the directory"
                    raise AuditError(f"entry {index}: not a JSON object", code="AUDIT_ENTRY_MALFORMED", hint=hint)
                yield fields
            index += 1


# ---------------------------------------------------------------------------------------------------------------
# The node's side: open, append, prove.


def _load_or_create_key(directory: Path, log_has_entries: bool) -> Ed25519PrivateKey:
    key_path, pub_path = directory / KEY, directory / PUBLIC_KEY
    if not key_path.exists():
        if log_has_entries:
            raise AuditError(
                f"{key_path}: the audit key is missing but the log has entries",
                code="AUDIT_KEY_MISSING",
                hint="restore the key; a new key cannot sign for entries the old one signed",
            )
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_file(key_path, pem, 0o600)
    else:
        try:
            loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            loaded = None
        if not isinstance(loaded, Ed25519PrivateKey):
            raise AuditError(f"{key_path}: not an unencrypted PEM Ed25519 key", code="AUDIT_KEY_INVALID")
        key = loaded
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if pub_path.exists():
        try:
            same = _public_raw(load_public_key(pub_path.read_bytes())) == _public_raw(key.public_key())
        except AuditError:
            same = False
        if not same:
            raise AuditError(f"{pub_path} does not match {key_path}", code="AUDIT_KEY_MISMATCH")
    else:
        write_file(pub_path, pub_pem, 0o644)
    return key


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


_sync = getattr(os, "fdatasync", os.fsync)


class AuditLog:
    """One node's append-only log; one process appends (an exclusive lock on ``entries.jsonl`` enforces it).

    Use :meth:`open`; :meth:`append` is thread-safe. Close it (or use ``with``) to release the lock.
    """

    def __init__(
        self,
        directory: Path,
        node_id: str,
        key: Ed25519PrivateKey,
        entries_fd: int,
        checkpoints_fd: int,
        fsync: bool,
    ) -> None:
        self.directory = directory
        self.node_id = node_id
        self._key = key
        self._public = key.public_key()
        self._entries_fd = entries_fd
        self._checkpoints_fd = checkpoints_fd
        self._reader = os.open(directory / ENTRIES, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._fsync = fsync
        self._lock = threading.Lock()
        self._tree = merkle.MerkleTree()
        self._range = merkle.CompactRange()
        self._offsets = array("Q")  # where each entry's line starts in entries.jsonl
        self._end = 0
        self._latest: Checkpoint | None = None
        self._broken: str | None = None

    @classmethod
    def open(cls, directory: Path, node_id: str, *, fsync: bool = True, check_all_signatures: bool = True) -> AuditLog:
        """Open (or create) the log in ``directory`` for ``node_id`` after checking all of it.

        A damaged log (edited, cut short, a checkpoint that does not verify) is refused with
        ``AUDIT_LOG_CORRUPT`` naming the first bad entry: a node must not append onto a broken log.
        ``check_all_signatures=False`` checks every root but only the latest checkpoint's signature, for a fast
        restart of a large log; :func:`verify_log` always checks them all.
        """
        directory = Path(directory)
        if not isinstance(node_id, str) or not _NODE_ID.fullmatch(node_id):
            raise AuditError(f"invalid node id {node_id!r} for an audit log", code="AUDIT_FIELD_INVALID")
        directory.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        entries_fd = os.open(directory / ENTRIES, flags, 0o600)
        checkpoints_fd = -1
        try:
            try:
                fcntl.flock(entries_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AuditError(
                    f"{directory}: the audit log is open in another process (or another AuditLog)",
                    code="AUDIT_LOG_LOCKED",
                ) from None
            checkpoints_fd = os.open(directory / CHECKPOINTS, flags, 0o600)
            key = _load_or_create_key(directory, os.fstat(entries_fd).st_size > 0)
            log = cls(directory, node_id, key, entries_fd, checkpoints_fd, fsync)
            try:
                log._load(check_all_signatures)
            except BaseException:
                os.close(log._reader)
                raise
        except BaseException:
            os.close(entries_fd)
            if checkpoints_fd >= 0:
                os.close(checkpoints_fd)
            raise
        return log

    def _load(self, all_signatures: bool) -> None:
        tree_append, offsets = self._tree.append, self._offsets

        def sink(leaf: bytes, length: int) -> None:
            tree_append(leaf)
            offsets.append(self._end)
            self._end += length

        scan = _Scan(self.directory, self._public, node_id=self.node_id, sink=sink, all_signatures=all_signatures)
        scan.range = self._range
        report = scan.run()
        if not report.ok:
            if report.code == "AUDIT_NODE_MISMATCH":
                raise AuditError(f"{self.directory}: {report.problem}", code="AUDIT_NODE_MISMATCH")
            where = f"at entry {report.first_bad}" if report.first_bad is not None else ""
            raise AuditError(
                f"{self.directory}: the audit log is damaged {where}: [{report.code}] {report.problem}; "
                "refusing to append to it",
                code="AUDIT_LOG_CORRUPT",
                hint="run `hpf audit verify` on it, keep it as evidence, and start a new log directory",
            )
        self._latest = report.latest
        if report.unsigned:  # entries written just before a crash, before their checkpoint
            self._latest = self._checkpoint(self._tree.size)

    # -- reading ------------------------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._tree.size

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._public

    def public_key_raw(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return _public_raw(self._public)

    def public_key_b64(self) -> str:
        """The raw 32-byte public key in base64, as the catalog lists it."""
        return _b64(_public_raw(self._public))

    def latest_checkpoint(self) -> Checkpoint | None:
        return self._latest

    def root(self, size: int | None = None) -> bytes:
        with self._lock:
            return self._tree.root(size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Proof that entry ``index`` is in the tree of the first ``size`` entries (default: all)."""
        with self._lock:
            try:
                return self._tree.inclusion_proof(index, size)
            except ValueError as err:
                raise AuditError(str(err), code="AUDIT_PROOF_RANGE") from None

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Proof that the tree of ``old_size`` entries is a prefix of the tree of ``new_size`` (default: all)."""
        with self._lock:
            try:
                return self._tree.consistency_proof(old_size, new_size)
            except ValueError as err:
                raise AuditError(str(err), code="AUDIT_PROOF_RANGE") from None

    def entry(self, index: int) -> bytes:
        """The exact line (canonical JSON, no newline) of entry ``index``."""
        with self._lock:
            if not 0 <= index < self._tree.size:
                raise AuditError(f"there is no entry {index}", code="AUDIT_PROOF_RANGE")
            start = self._offsets[index]
            end = self._offsets[index + 1] if index + 1 < len(self._offsets) else self._end
            return os.pread(self._reader, end - start - 1, start)

    def receipt(self, index: int) -> Receipt:
        """A receipt for an earlier entry, under the latest checkpoint."""
        line = self.entry(index)
        latest = self._latest
        if latest is None or latest.size <= index:  # only while a crash-interrupted append is re-signed
            raise AuditError(f"entry {index} has no checkpoint yet", code="AUDIT_PROOF_RANGE")
        return Receipt(self.node_id, index, line, latest)

    def entries(self, start: int = 0) -> Iterator[dict[str, Any]]:
        """The entries from ``start`` as dicts (those present when called)."""
        with self._lock:
            if start >= len(self._offsets):
                return
            offset, end = self._offsets[max(start, 0)], self._end
        with (self.directory / ENTRIES).open("rb") as fh:
            fh.seek(offset)
            remaining = end - offset
            for line in fh:
                if remaining <= 0:
                    break
                remaining -= len(line)
                yield json.loads(line)

    # -- writing ------------------------------------------------------------------------------------------------

    def _checkpoint(self, size: int) -> Checkpoint:
        """Sign and persist a checkpoint for the first ``size`` entries (call with the lock held or alone)."""
        unsigned = Checkpoint(self.node_id, size, self._range.root(), utc_now(), b"")
        cp = dataclasses.replace(unsigned, signature=self._key.sign(unsigned.signed_message()))
        _write_all(self._checkpoints_fd, checkpoint_line(cp))
        if self._fsync:
            _sync(self._checkpoints_fd)
        return cp

    def append(self, fields: Mapping[str, Scalar]) -> Receipt:
        """Log one request; ``"index"`` is added. Returns the receipt under the new size's checkpoint.

        The entry is on disk (synced, unless ``fsync=False``) before its checkpoint is written, and the
        checkpoint before the receipt is returned. A failed write leaves the log refusing further appends.
        """
        if "index" in fields:
            raise AuditError("the audit log sets the index itself", code="AUDIT_FIELD_INVALID")
        with self._lock:
            if self._broken is not None:
                raise AuditError(f"{self.directory}: {self._broken}", code="AUDIT_LOG_BROKEN")
            index = self._tree.size
            line = canonical_json({**fields, "index": index})
            try:
                _write_all(self._entries_fd, line + b"\n")
                if self._fsync:
                    _sync(self._entries_fd)
                leaf = merkle.leaf_hash(line)
                self._tree.append(leaf)
                self._range.append(leaf)
                self._offsets.append(self._end)
                self._end += len(line) + 1
                cp = self._checkpoint(index + 1)
            except OSError as err:
                self._broken = f"an audit write failed ({err.strerror}); reopen the log to continue"
                raise AuditError(f"{self.directory}: {self._broken}", code="AUDIT_LOG_BROKEN") from None
            self._latest = cp
        return Receipt(self.node_id, index, line, cp)

    def close(self) -> None:
        with self._lock:
            if self._entries_fd >= 0:
                os.close(self._reader)
                os.close(self._checkpoints_fd)
                os.close(self._entries_fd)  # releases the lock
                self._entries_fd = self._checkpoints_fd = -1
                self._broken = "the log is closed"

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
