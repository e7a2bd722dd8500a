"""The one clock of every event: monotonic durations on a wall-clock origin."""

from __future__ import annotations

import time

_WALL_OFFSET_NS = time.time_ns() - time.perf_counter_ns()
_now_ns = time.perf_counter_ns


def wall_ns() -> int:
    """Now, on the clock every event uses (ns since the epoch, monotonic within a process)."""
    return _now_ns() + _WALL_OFFSET_NS
