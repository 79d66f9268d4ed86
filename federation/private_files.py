"""Files a party writes that hold personal or secret matter (receipts, results about people): mode 0600.

Keys are written whole and atomically by :func:`federation.pki.write_file`; what grows line by line (a client's
audit receipts) or is written once by the command line (a screening's results) goes through here, so the file is
never readable by others, not even for the moment between its creation and a ``chmod``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TextIO

PRIVATE = 0o600


def _private_fd(path: Path, flags: int) -> int:
    """``path`` opened with ``flags``, created mode 0600; a file found with a wider mode is narrowed to 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, flags | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), PRIVATE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != PRIVATE:
            os.fchmod(fd, PRIVATE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def append_private(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` (made if missing), which is and stays mode 0600."""
    fd = _private_fd(path, os.O_WRONLY | os.O_APPEND)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def open_private_text(path: Path) -> TextIO:
    """``path`` truncated and opened for writing text (UTF-8, no newline translation), mode 0600."""
    return os.fdopen(_private_fd(path, os.O_WRONLY | os.O_TRUNC), "w", encoding="utf-8", newline="")
