"""The node's state directory: it can be written, or the node does not start."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hpf.federation.errors import ConfigError


def require_writable(directory: Path, mode: int = 0o777) -> None:
    """Make ``directory`` if need be and write (and remove) a file in it: a node whose keys, audit log or ledger
    cannot be written refuses to start, naming the directory, before it writes anything there."""
    try:
        directory.mkdir(mode=mode, parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"the node cannot write its state directory {directory} ({exc.strerror or type(exc).__name__})",
            code="CONFIG_STATE_UNWRITABLE",
            hint="give 'state_dir:' a directory this node's user can create and write",
        ) from None
