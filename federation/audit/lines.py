"""Reading an append-only log file in whole lines, a chunk at a time (a log may be far larger than memory)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path


def line_chunks(path: Path, block: int = 1 << 20) -> Iterator[tuple[list[bytes], bool]]:
    """Complete lines in chunks; a last line without its newline comes alone, flagged torn."""
    with path.open("rb") as fh:
        rest = b""
        while data := fh.read(block):
            data = rest + data
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            yield data[:cut].split(b"\n"), False
            rest = data[cut + 1 :]
        if rest:
            yield [rest], True
