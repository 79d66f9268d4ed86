"""Reading a node's audit log from outside: :func:`verify_log` checks a log directory in one streaming pass
(:class:`federation.audit.scan.LogScan`, which the node also runs when it opens its log), :func:`read_entries`
lists its entries unchecked.

What the files alone can and cannot show. The node writes each entry, then the checkpoint for the new size,
so a crash can leave at most one entry without a checkpoint (reported in ``unsigned``, not a failure; the
node signs it when it next opens the log); more than one is ``AUDIT_UNSIGNED``: someone without the key
appended them. A crash in the middle of a write leaves a last line without its newline, ``AUDIT_TORN_TAIL``
(the node cuts it off when it next opens the log, keeping the bytes in a ``*.torn-<time>`` file beside it).
Any edit, deletion or reordering of signed entries, or cutting entries without their checkpoints, fails.

But cutting both files back to the same earlier prefix (the first ``k`` entries and the checkpoints up to
size ``k``) leaves a log that is consistent with itself: it cannot be detected from the files alone. It is
caught by a checkpoint kept from before the cut: an auditor's older checkpoint (``older``; ``hpf audit verify
--checkpoint``), a client's receipts (``receipts``; ``hpf audit verify --receipts``, or ``hpf audit
receipts`` through the coordinator), or any checkpoint of the node held by someone else. The same holds for
a log rewritten by whoever holds the node's key.

Whose log it is. Every entry names its node (``"node"``) and every checkpoint signs the node id, so a log,
a saved checkpoint or a receipt is bound to one node. Verified for a named node (``node_id``; ``hpf audit verify
--node``), another node's intact log put at this node's path fails with ``AUDIT_NODE_MISMATCH``, as does
another node's checkpoint or receipt given with it; without a name the log is checked against the node its
first checkpoint names, which only a pinned key can vouch for.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hpf.federation.audit.keys import PUBLIC_KEY, load_public_key
from hpf.federation.audit.lines import line_chunks
from hpf.federation.audit.records import CHECKPOINTS, ENTRIES, Checkpoint, Receipt, parse_checkpoint_line
from hpf.federation.audit.scan import LogScan, VerifyReport
from hpf.federation.errors import AuditError


def _unreadable(code: str, text: str) -> VerifyReport:
    """The report on a directory that could not be read as a log at all."""
    return VerifyReport(False, 0, 0, None, code, text, False)


def verify_log(
    directory: Path,
    public_key: Ed25519PublicKey | None = None,
    older: Checkpoint | None = None,
    receipts: Sequence[Receipt] = (),
    *,
    node_id: str | None = None,
    check_all_signatures: bool = True,
) -> VerifyReport:
    """Check a log directory in one pass; ``ok`` is False with the first problem found.

    Checks: every entry line is canonical JSON carrying its position as ``index`` and its node as ``node``
    (``node_id``, the node whose log this must be, else the node the first checkpoint names); every checkpoint
    is that node's (``AUDIT_NODE_MISMATCH``; so is an older checkpoint or a receipt of another node when
    ``node_id`` is given) and is signed by the key (``public_key``, else the directory's own ``audit.pub``: then
    ``key_pinned`` is False), sizes never decrease, none is larger than the log (``AUDIT_TRUNCATED``), each
    root is the head of that prefix; at most one entry (the last) is covered by no checkpoint
    (``AUDIT_UNSIGNED`` names the first of more), and both files end with a newline (``AUDIT_TORN_TAIL``:
    ``first_bad`` is the torn entry, or None when only the last checkpoint line is torn); ``older`` (a
    checkpoint saved earlier by an auditor or client) and each receipt's checkpoint match the same prefix, and
    each receipt's entry is the log's entry at its index. Both files cut back to the same earlier prefix pass
    unless ``older`` or a receipt covers more (see the module's docstring).

    Ed25519 verification (about 70 µs a checkpoint, spread over the CPUs) dominates a log with a checkpoint
    per entry; ``check_all_signatures=False`` still checks every root, but only the latest checkpoint's
    signature (which alone vouches for every entry), about 4 times faster.
    """
    directory = Path(directory)
    if not (directory / ENTRIES).is_file() and not (directory / CHECKPOINTS).is_file():
        return _unreadable("AUDIT_NOT_FOUND", f"{directory}: no audit log here (no {ENTRIES})")
    pinned = public_key is not None
    if public_key is None:
        try:
            public_key = load_public_key((directory / PUBLIC_KEY).read_bytes())
        except OSError:
            return _unreadable("AUDIT_NOT_FOUND", f"{directory}: {PUBLIC_KEY} is missing: pass the node's public key")
        except AuditError as err:
            return _unreadable(err.code, f"{directory / PUBLIC_KEY}: {err.message}")
    scan = LogScan(
        directory, public_key, older=older, receipts=receipts, node_id=node_id, all_signatures=check_all_signatures
    )
    report = scan.run()
    return report if pinned else dataclasses.replace(report, key_pinned=False)


def log_node(directory: Path) -> str | None:
    """The node the log's first checkpoint names (None without a readable one), read without checking it: what
    the log says of itself, which only :func:`verify_log` with a pinned key vouches for."""
    try:
        with (Path(directory) / CHECKPOINTS).open("rb") as fh:
            first = parse_checkpoint_line(fh.readline().removesuffix(b"\n"))
    except OSError:
        return None
    return first.node_id if isinstance(first, Checkpoint) else None


def read_entries(directory: Path, start: int = 0) -> Iterator[dict[str, Any]]:
    """The entries of a log directory as dicts, without checking them (``verify_log`` does that)."""
    path = Path(directory) / ENTRIES
    if not path.is_file():
        raise AuditError(f"{directory}: no audit log here ({ENTRIES} is missing)", code="AUDIT_NOT_FOUND")
    index = 0
    for lines, _ in line_chunks(path):
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
