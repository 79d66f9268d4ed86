"""Ways to tamper with a node's audit log on disk, for the tests that check each one is caught."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hpf.federation.audit.records import ENTRIES

Tamper = Callable[[Path], None]


def lines(directory: Path, name: str = ENTRIES) -> list[bytes]:
    return (directory / name).read_bytes().splitlines()


def write_lines(directory: Path, rows: list[bytes], name: str = ENTRIES) -> None:
    (directory / name).write_bytes(b"".join(row + b"\n" for row in rows))


def replace_line(k: int, line: bytes) -> Tamper:
    def tamper(directory: Path) -> None:
        rows = lines(directory)
        rows[k] = line
        write_lines(directory, rows)

    return tamper


def edit(k: int, old: bytes, new: bytes) -> Tamper:
    """Change one field of entry ``k`` in place (the line stays canonical JSON)."""
    return lambda directory: replace_line(k, lines(directory)[k].replace(old, new))(directory)


def delete(k: int) -> Tamper:
    return lambda directory: write_lines(directory, [r for i, r in enumerate(lines(directory)) if i != k])


def swap(k: int) -> Tamper:
    def tamper(directory: Path) -> None:
        rows = lines(directory)
        rows[k], rows[k + 1] = rows[k + 1], rows[k]
        write_lines(directory, rows)

    return tamper
