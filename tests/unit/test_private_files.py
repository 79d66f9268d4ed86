"""Receipts and results about people are written mode 0600, whatever the umask or the file's mode before."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpf.federation.private_files import append_private, open_private_text


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The loosest umask: nothing the process sets by default narrows a new file's mode."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_a_new_file_is_private_from_its_first_byte(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "profile" / "receipts.jsonl"  # the folder is made too
    append_private(path, b'{"a":1}\n')
    assert mode(path) == 0o600 and path.read_bytes() == b'{"a":1}\n'
    append_private(path, b'{"b":2}\n')
    assert mode(path) == 0o600 and path.read_bytes() == b'{"a":1}\n{"b":2}\n'


@pytest.mark.parametrize("before", [0o644, 0o666, 0o604, 0o640])
def test_a_file_found_readable_by_others_is_narrowed(tmp_path: Path, open_umask: None, before: int) -> None:
    path = tmp_path / "receipts.jsonl"
    path.write_bytes(b"kept\n")
    path.chmod(before)
    append_private(path, b"more\n")
    assert mode(path) == 0o600 and path.read_bytes() == b"kept\nmore\n"
    out = tmp_path / "screened.csv"
    out.write_text("old results\n")
    out.chmod(before)
    with open_private_text(out) as fh:
        fh.write("application,person_id\r\n")
    assert mode(out) == 0o600 and out.read_bytes() == b"application,person_id\r\n"  # truncated, no translation
