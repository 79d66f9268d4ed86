"""Files a party writes that hold personal or secret matter (receipts, results about people): mode 0600.

Keys and state files are written whole and atomically by :func:`write_file`; what grows line by line (a client's
audit receipts) or is written once by the command line (a screening's results) goes through the other helpers
here, so the file is never readable by others, not even for the moment between its creation and a ``chmod``.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import TextIO

PRIVATE = 0o600


def _written(path: Path, data: bytes, mode: int) -> str:
    """A temporary file beside ``path`` holding ``data``, with ``mode`` set before any byte lands, on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with ``mode`` set before any byte lands on disk, and on disk before this returns (a file
    written after it is never the only one of the two to survive a crash)."""
    tmp = _written(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sync_dir(path.parent)


def create_file(path: Path, data: bytes, mode: int) -> bool:
    """Write ``path`` as :func:`write_file` does, unless a file is already there: False, and nothing written, when
    one is. Two makers of one key (a node's first start and ``hpf node keys``) that both found none so keep the
    first one written, which the second then reads, instead of each holding a key of its own."""
    tmp = _written(path, data, mode)
    try:
        try:
            os.link(tmp, path)  # whole and on disk, under its name only if the name is free
        except FileExistsError:
            return False
    finally:
        Path(tmp).unlink(missing_ok=True)
    sync_dir(path.parent)
    return True


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes, else OSError: a FIFO is never
    waited on (opened without blocking, refused before any read), a device never read, a file past ``limit``
    never read whole."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
    return data


def sync_dir(directory: Path) -> None:
    """Make a file created or renamed in ``directory`` durable (where the platform lets a directory be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
