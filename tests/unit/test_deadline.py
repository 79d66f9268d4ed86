"""The coordinator's wait for the regions runs from a request's arrival, and gives every region at least the floor."""

from __future__ import annotations

import time
from typing import Any, cast

from hpf.coordinator.fanout import FanOut


def test_the_wait_runs_from_the_arrival_but_gives_every_region_at_least_the_floor() -> None:
    fanout = FanOut(cast(Any, None), {}, deadline_ms=10_000, min_deadline_ms=5_000)
    before = time.monotonic()
    fresh = fanout._deadline(0)
    assert before + 10.0 <= fresh <= time.monotonic() + 10.0
    queued = fanout._deadline(0, since=before - 3.0)  # arrived 3 s ago: 7 s are left of its 10
    assert before + 7.0 <= queued <= time.monotonic() + 7.0
    late = fanout._deadline(0, since=before - 8.0)  # 2 s are left, less than the floor: the floor, from now
    assert before + 5.0 <= late <= time.monotonic() + 5.0
    longer = fanout._deadline(20_000, since=before - 8.0)  # an asker may lengthen the wait, from the arrival
    assert before + 12.0 <= longer <= time.monotonic() + 12.0
