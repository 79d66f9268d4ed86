"""What a crash in the middle of an append leaves in a node's audit log, repaired when the node next opens it.

An append writes the entry line, then the checkpoint line, so a crash can interrupt it in three places: in the
middle of the entry line or of the checkpoint line (a last line without its newline: :func:`cut_torn_tail` cuts it
off, its bytes kept in ``<file>.torn-<UTC time>`` beside it), or between the two writes (one entry without a
checkpoint: :meth:`federation.audit.log.AuditLog.open` signs it).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

from hpf.federation.errors import AuditError
from hpf.federation.private_files import sync_dir

_log = logging.getLogger("hpf.audit")


def torn_tail(path: Path, block: int = 1 << 16) -> int | None:
    """Where the file's last line starts when it has no newline (a write cut short); None when it is whole."""
    with path.open("rb") as fh:
        end = pos = fh.seek(0, os.SEEK_END)
        while pos > 0:
            start = max(0, pos - block)
            fh.seek(start)
            chunk = fh.read(pos - start)
            if pos == end and chunk.endswith(b"\n"):
                return None
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                return start + cut + 1
            pos = start
        return 0 if end else None


def cut_torn_tail(directory: Path, name: str, fd: int, *, fsync: bool, expected: int | None = None) -> None:
    """Cut off the last line of ``directory/name`` (open for writing as ``fd``) if it has no newline (a crash while
    it was written), after keeping its bytes in ``<name>.torn-<UTC time>`` beside it; ``expected`` is where that
    line must start, if known (call alone, holding the log's lock)."""
    path = directory / name
    start = torn_tail(path)
    if start is None:
        return
    if expected is not None and start != expected:
        raise AuditError(f"{path}: changed while the audit log was being opened", code="AUDIT_LOG_CORRUPT")
    with path.open("rb") as fh:
        fh.seek(start)
        torn = fh.read()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for attempt in range(100):
        evidence = directory / (f"{name}.torn-{stamp}" + (f".{attempt}" if attempt else ""))
        try:
            out = os.open(evidence, flags, 0o600)
            break
        except FileExistsError:
            continue
    else:
        raise AuditError(f"{path}: cannot name a file to keep its torn last line in", code="AUDIT_LOG_CORRUPT")
    with os.fdopen(out, "wb") as kept:
        kept.write(torn)
        if fsync:
            kept.flush()
            os.fsync(out)
    if fsync:  # the evidence is on disk before the log loses those bytes
        sync_dir(directory)
    os.ftruncate(fd, start)
    if fsync:
        os.fsync(fd)
    _log.warning(
        "%s: the last line of %s was incomplete (a crash while it was written): cut it off, its %d bytes kept in %s",
        directory,
        name,
        len(torn),
        evidence.name,
    )
