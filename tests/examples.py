"""How many examples a property test draws: its own count under the ``ci`` Hypothesis profile (the default), a
tenth of it (at least 3) under ``dev`` (see tests/conftest.py)."""

from __future__ import annotations

import os


def budget(count: int) -> int:
    """``count`` examples, or a tenth of them (at least 3) under the ``dev`` profile."""
    return count if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci" else max(3, count // 10)
