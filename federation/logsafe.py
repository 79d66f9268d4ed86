"""Logging an unexpected failure without its message: messages can carry values, frames do not."""

from __future__ import annotations

import traceback


def unexpected(exc: BaseException) -> str:
    """The exception type and where it was raised (file:line in function), never its message."""
    frames = traceback.extract_tb(exc.__traceback__)[-4:]
    where = " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name}" for f in reversed(frames))
    return f"{type(exc).__name__} at {where or 'unknown location'}"
