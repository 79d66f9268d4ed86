"""One demo per data directory: a lock file the running demo holds."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from hpf.federation.errors import ConfigError

LOCK_FILE = ".demo.lock"


@contextlib.contextmanager
def only_demo(data: Path) -> Iterator[None]:
    """Hold the data directory for one demo: a second demo on the same directory would rewrite the files and
    configs the first one's parties are using, and its nodes would find their audit logs held by another."""
    data.mkdir(parents=True, exist_ok=True)
    with open(data / LOCK_FILE, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise ConfigError(
                f"a demo is already running on {data} (process {holder})",
                code="DEMO_RUNNING",
                hint="stop it (Ctrl-C), or give this one another --data directory",
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)
