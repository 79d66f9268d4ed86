"""One streaming pass over a node's audit log directory (:class:`LogScan`) and what it finds (:class:`VerifyReport`).

The pass reads ``entries.jsonl`` in chunks, hashing each entry into a compact Merkle range, and checks each
checkpoint of ``checkpoints.jsonl`` (and any checkpoint kept outside the log: an older one, or receipts') once the
entries it covers are read; signatures are checked in worker threads. An auditor runs it through
:func:`federation.audit.verify.verify_log`; the node runs the same pass when it opens its log
(:meth:`federation.audit.log.AuditLog.open`). What the files alone can and cannot show: see
:mod:`federation.audit.verify`.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hpf.federation.audit import merkle
from hpf.federation.audit.lines import line_chunks
from hpf.federation.audit.records import (
    CHECKPOINTS,
    ENTRIES,
    Checkpoint,
    Receipt,
    first_bad_signature,
    first_entry_problem,
    parse_checkpoint_line,
)
from hpf.federation.audit.restore_record import MARKER, DeclaredBreak, lost_note, restore_in
from hpf.federation.errors import AuditError


@dataclass(frozen=True)
class VerifyReport:
    """What a pass (:func:`federation.audit.verify.verify_log`) found. ``first_bad`` is the first entry that
    cannot be trusted (None when the problem implicates no single entry, e.g. an outside checkpoint that does not
    match the log, or a torn last checkpoint line after entries that are all intact)."""

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
    unsigned: int = 0  # entries after the latest checkpoint: 0 or 1 (a crash between the two writes leaves one)
    breaks: tuple[DeclaredBreak, ...] = ()  # the restores the log declares (federation.audit.restore_record)
    lost: tuple[str, ...] = ()  # the outside checkpoints and receipts that fall in a declared break

    @property
    def message(self) -> str:
        where = f"entry {self.first_bad}: " if self.first_bad is not None else ""
        return where + (self.problem or "ok")

    def error(self) -> AuditError | None:
        return None if self.ok else AuditError(self.message, code=self.code or "AUDIT_INVALID")

    def to_dict(self) -> dict[str, Any]:
        """Every field, in order, the root in hex and the latest checkpoint as its own dict (JSON-ready)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        latest, breaks = self.latest.to_dict() if self.latest else None, [b.to_dict() for b in self.breaks]
        return fields | {"root": self.root.hex(), "latest": latest, "breaks": breaks}


# Where a problem sits in the pass: (entries read, 0: a check on a checkpoint of that size | 1: a check on the
# entry with that index, tie-break). The earliest wins, so first_bad is the first entry that cannot be trusted.
_Key = tuple[int, int, int]
_OUTSIDE = 1 << 40  # outside checkpoints (older, receipts) come after the log's own of the same size


@dataclass(order=True)
class _Problem:
    key: _Key
    code: str = field(compare=False)
    first_bad: int | None = field(compare=False)
    text: str = field(compare=False)


class LogScan:
    """One pass over a log directory: entries, the log's checkpoints, an older checkpoint, receipts.

    ``node_id`` is the node the log must be (default: whoever its first checkpoint names); ``sink`` gets each
    entry's leaf hash and line length (newline included) as it is read; ``compact`` is the range the entries
    are hashed into (default: a new one). ``torn_tails=False`` checks the log as if a torn last line (no
    newline) of either file were already cut off, as the node does when it opens its log; ``torn_entry`` and
    ``torn_checkpoint`` then say what was left out. ``restore_times=False`` does not refuse a restore record dated
    later than the log's checkpoint that covers it (``AUDIT_RESTORE_INVALID`` otherwise), as the node does when
    it opens its log: such a record excuses no checkpoint signed after that one
    (:meth:`federation.audit.restore_record.DeclaredBreak.loses`), and the node refuses questions until its
    restore time.
    """

    def __init__(
        self,
        directory: Path,
        key: Ed25519PublicKey,
        *,
        older: Checkpoint | None = None,
        receipts: Sequence[Receipt] = (),
        node_id: str | None = None,
        sink: Callable[[bytes, int], None] | None = None,
        compact: merkle.CompactRange | None = None,
        all_signatures: bool = True,
        torn_tails: bool = True,
        restore_times: bool = True,
    ) -> None:
        self.directory, self.key, self.node_id, self.sink = directory, key, node_id, sink
        self.all_signatures = all_signatures
        self.torn_tails = torn_tails
        self.restore_times = restore_times
        self.torn_entry: int | None = None  # the index of a last entry line without its newline
        self.torn_checkpoint: int | None = None  # the line number of a last checkpoint line without its newline
        self.workers = min(8, os.cpu_count() or 1)
        self.range = compact if compact is not None else merkle.CompactRange()
        self.problem: _Problem | None = None
        self.n = 0  # entries read
        self.checkpoints = 0
        self.latest: Checkpoint | None = None
        self.head: tuple[int, bytes] = (0, merkle.EMPTY_ROOT)
        self.older = older
        self.breaks: list[DeclaredBreak] = []
        self.covered: dict[int, str] = {}  # a break's checkpoint -> when the log's first checkpoint past it was signed
        self.lost: list[str] = []
        self.outside: dict[int, list[tuple[int, str, Checkpoint]]] = {}  # size -> (tie, what, checkpoint)
        self.receipt_entries: dict[int, list[tuple[int, Receipt]]] = {}
        for tie, receipt in enumerate(receipts):
            self._add_receipt(tie, receipt)
        if older is not None:
            if node_id is not None and older.node_id != node_id:
                text = f"{self._what(older)} is node {older.node_id}'s, this log is node {node_id}'s"
                self.fail((-1, 0, 0), "AUDIT_NODE_MISMATCH", None, text)
            elif not older.is_signed_by(key):
                self.fail((-1, 0, 0), "AUDIT_CHECKPOINT_SIGNATURE", None, f"{self._what(older)} is not signed")
            self.outside.setdefault(older.size, []).append((_OUTSIDE, "older", older))
        self.events = sorted({*self.outside, *(i + 1 for i in self.receipt_entries)})
        self.stream = self._checkpoint_stream()
        self.next = next(self.stream, None)
        first = self.next[1] if self.next is not None else None
        # the node every entry must name: the one asked for, else the one the log's first checkpoint signs for
        self.entry_node = node_id or (first.node_id if isinstance(first, Checkpoint) else None)
        self.batch: list[tuple[int, int, Checkpoint]] = []
        self.pending: deque[Future[tuple[int, int, int] | None]] = deque()

    def _add_receipt(self, tie: int, receipt: Receipt) -> None:
        what = f"receipt {tie + 1} (entry {receipt.index})"
        if self.node_id is not None and receipt.checkpoint.node_id != self.node_id:
            text = f"{what} is node {receipt.checkpoint.node_id}'s, this log is node {self.node_id}'s"
            self.fail((-1, 1, tie), "AUDIT_NODE_MISMATCH", None, text)
        elif not receipt.checkpoint.is_signed_by(self.key):
            self.fail((-1, 1, tie), "AUDIT_CHECKPOINT_SIGNATURE", None, f"{what}: its checkpoint is not signed")
        elif problem := receipt.problem():
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
        for lines, torn in line_chunks(path):
            if torn:  # the last line, without its newline: a crash while it was written (see _finish)
                self.torn_checkpoint = lineno + 1
                return
            for line in lines:
                lineno += 1
                yield lineno, parse_checkpoint_line(line)

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
            what = f"receipt {tie + 1} (entry {receipt.index})"
            if receipt.entry != line and not self._lost(receipt.index + 1, receipt.checkpoint, what):
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
            for declared in self.breaks:
                if prev <= declared.checkpoint < cp.size:
                    self.covered[declared.checkpoint] = cp.time
                    if self.restore_times and cp.time < declared.restore_time:
                        text = (
                            f"checkpoint {lineno} (size {cp.size}) was signed at {cp.time}, before the restore time "
                            f"({declared.restore_time}) of the restore record it covers"
                        )
                        return self.fail(key, "AUDIT_RESTORE_INVALID", declared.checkpoint, text)
            if self.all_signatures:
                self.batch.append((lineno, prev, cp))
            self.checkpoints += 1
            self.latest, prev = cp, cp.size
            self.next = next(self.stream, None)
        for tie, what, cp in self.outside.get(n, ()):
            if cp.root != self._root(n) and self._lost(cp.size, cp, what):
                continue
            if cp.root != self._root(n) or (self.latest is not None and cp.node_id != self.latest.node_id):
                code = "AUDIT_INCONSISTENT" if what == "older" else "AUDIT_RECEIPT_MISMATCH"
                text = f"{self._what(cp, what)} does not match entries 0..{n - 1}: the log was rewritten"
                return self.fail((n, 0, tie), code, None, text)
        return False

    def _lost(self, size: int, cp: Checkpoint, what: str) -> bool:
        """Whether a checkpoint kept outside the log (``what``), of ``size`` entries, falls in a break the log
        declares (signed before the restore, and before the log's checkpoint that covers the restore record, past
        its checkpoint): lost with the host, not rewritten."""
        what = "the saved checkpoint" if what == "older" else what
        note = lost_note(self.breaks, self.covered, size, cp, what)
        if note is not None and note not in self.lost:
            self.lost.append(note)
        return note is not None

    def _restore(self, n: int, line: bytes) -> bool:
        """Entry ``n`` may be a restore record: the break it declares, against the root of the entries before it;
        True to stop (a record that does not hold)."""
        declared = restore_in(line, n, self.entry_node, self.range.root(), self.key)
        if isinstance(declared, str):
            return self.fail((n, 1, 0), "AUDIT_RESTORE_INVALID", n, declared)
        if declared is not None:
            self.breaks.append(declared)
        return False

    def _entries(self, pool: ThreadPoolExecutor) -> None:
        path = self.directory / ENTRIES
        sha, append, sink, n = hashlib.sha256, self.range.append, self.sink, 0
        for lines, torn in line_chunks(path):
            if torn:  # the last line, without its newline: a crash while it was written (see _finish)
                self.torn_entry = n
                return
            bad = first_entry_problem(lines, n, self.entry_node)
            due = self._due()
            restores = MARKER in b"\n".join(lines)  # rare: then each line is looked at
            for line in lines if bad is None else lines[: bad[0] - n]:
                if restores and MARKER in line and self._restore(n, line):
                    self.n = n
                    return
                leaf = sha(b"\x00" + line).digest()  # merkle.leaf_hash, inlined in the hot loop
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
            self.pending.append(pool.submit(first_bad_signature, self.key, self.batch[:256]))
            del self.batch[:256]
        while self.pending and (drain or len(self.pending) > 4 * self.workers):
            if failed := self.pending.popleft().result():
                lineno, prev, size = failed
                text = f"checkpoint {lineno} (size {size}) is not signed by the node's audit key"
                self.fail((size, 0, lineno), "AUDIT_CHECKPOINT_SIGNATURE", min(prev, max(size - 1, 0)), text)

    def _finish(self) -> None:
        """After the last entry: anything still waiting for entries means the log was cut short; more than one
        entry after the latest checkpoint means entries were appended without the key; a last line without its
        newline is torn."""
        n = self.n
        torn_entry = self.torn_entry if self.torn_tails else None
        signed_torn: int | None = None  # a checkpoint that signed the torn entry whole
        if (
            torn_entry is not None
            and self.next is not None
            and isinstance(self.next[1], Checkpoint)
            and self.next[1].size > n
        ):
            signed_torn, self.next = self.next[0], None  # the torn line is what cut the log short: say so below
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
                if self._lost(size, cp, what):
                    continue
                text = f"missing: the log ends after {n} entries but {self._what(cp, what)} covers {size}"
                self.fail((n, 0, tie), "AUDIT_TRUNCATED", n, text)
        signed = self.latest.size if self.latest else 0
        if n - signed > 1:  # a crash between an entry's write and its checkpoint's leaves one, never more
            text = (
                f"entries {signed}..{n - 1} ({n - signed}) are covered by no checkpoint: a crash leaves at most "
                "the last one unsigned, so they were appended by someone without the node's key"
            )
            self.fail((signed, 1, 2), "AUDIT_UNSIGNED", signed, text)
        if torn_entry is not None:
            text = f"the last line (entry {torn_entry}) is incomplete, without its newline: "
            if signed_torn is None:
                text += "a crash while it was written; the node cuts it off when it next opens the log"
            else:
                text += f"checkpoint {signed_torn} signed it whole, so it was cut short later"
            self.fail((torn_entry, 1, 0), "AUDIT_TORN_TAIL", torn_entry, text)
        elif self.torn_tails and self.torn_checkpoint is not None and self.next is None:
            text = (
                f"checkpoint {self.torn_checkpoint} is incomplete, the last line without its newline: a crash while "
                "it was written; the entries are intact, and the node cuts it off (and signs the last entry) when "
                "it next opens the log"
            )
            self.fail((n, 2, 0), "AUDIT_TORN_TAIL", None, text)

    def run(self) -> VerifyReport:
        if self.problem is None:
            with ThreadPoolExecutor(self.workers) as pool:
                if not self._at(0, None) and (self.directory / ENTRIES).exists():
                    self._entries(pool)
                if self.problem is None:
                    self._finish()
                self._submit(pool, drain=True)
            if not self.all_signatures and self.latest is not None and not self.latest.is_signed_by(self.key):
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
            breaks=tuple(self.breaks),
            lost=tuple(self.lost),
        )
