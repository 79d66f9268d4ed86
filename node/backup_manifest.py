"""A backup's manifest (``manifest.json``, which `hpf node backup` writes), read as an allow-list of fields and
forms: which node, when (one time, in two spellings that must agree, not after now), which checkpoint, which files."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from hpf.federation.audit.records import Checkpoint, is_node_id
from hpf.federation.errors import AuditError, ConfigError
from hpf.federation.private_files import read_regular
from hpf.node.backup import FORMAT, MANIFEST, iso_of_ms

MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: a time RFC 3339 can write


def _manifest_error(source: Path, why: str, hint: str | None = None) -> ConfigError:
    return ConfigError(
        f"{source}: {why}",
        code="BACKUP_MANIFEST_INVALID",
        hint=hint or f"name a folder `hpf node backup` wrote (it holds {MANIFEST})",
    )


MANIFEST_FIELDS = frozenset({"format", "node_id", "backup_time", "backup_time_ms", "checkpoint", "files"})


def ms_of_iso(text: str) -> int:
    """The Unix milliseconds of an RFC 3339 UTC time with milliseconds (as :func:`iso_of_ms` writes it).

    >>> ms_of_iso("2023-11-14T22:13:20.123Z")
    1700000000123
    """
    moment = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000


def read_manifest(source: Path, now_ms: int | None = None) -> dict[str, Any]:
    """The backup's manifest, its fields and their forms checked (``BACKUP_MANIFEST_INVALID``, never quoting what
    it holds): the node id a node id, the backup time (text and milliseconds) one time, and not after ``now_ms``
    (the restore; default: now). The manifest is not signed: what it says is checked against the backup's own
    audit log (:func:`check_backup`) and against the restore."""
    try:
        doc = json.loads(read_regular(source / MANIFEST, MAX_MANIFEST_BYTES))
    except OSError as exc:
        raise _manifest_error(source, f"{MANIFEST} cannot be read ({exc.strerror or 'not a file'})") from None
    except ValueError:
        raise _manifest_error(source, f"{MANIFEST} is not JSON") from None
    files, node_id, backup_ms, backup_time = (
        doc.get(k) if isinstance(doc, dict) else None for k in ("files", "node_id", "backup_time_ms", "backup_time")
    )
    if (
        not isinstance(doc, dict)
        or not set(doc) <= MANIFEST_FIELDS
        or doc.get("format") != FORMAT
        or not isinstance(files, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
        or not isinstance(node_id, str)
        or type(backup_ms) is not int
        or not isinstance(backup_time, str)
    ):
        raise _manifest_error(source, f"{MANIFEST} is not a backup manifest (its fields or their types differ)")
    if not is_node_id(node_id):
        raise _manifest_error(source, f"{MANIFEST}: its node id is not a node id")
    if not 0 <= backup_ms <= MAX_TIME_MS or backup_time != iso_of_ms(backup_ms):
        raise _manifest_error(source, f"{MANIFEST}: its backup time is not one time (backup_time, backup_time_ms)")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if backup_ms > now_ms:
        raise _manifest_error(
            source,
            f"{MANIFEST}: the backup was taken at {backup_time}, after this host's clock ({iso_of_ms(now_ms)})",
            hint="set this host's clock right (the gap the restore charges runs from the backup to now)",
        )
    try:
        # None: the node had logged nothing when it was backed up
        doc["checkpoint"] = None if doc.get("checkpoint") is None else Checkpoint.from_dict(doc.get("checkpoint"))
    except AuditError as err:
        raise _manifest_error(source, f"{MANIFEST}: {err.message}") from None
    return doc
