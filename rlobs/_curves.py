"""Learning-curve arithmetic shared by ``rlobs compare`` and ``rlobs plot``.

Episodes are counted as :class:`rlobs._tally.RunTally` counts them (vector envs: one per
sub-env episode).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._reader import RunLog
from ._tally import RunTally

# Two-sided 95% critical values of Student's t by degrees of freedom; between listed
# values the smaller df's (larger, conservative) value is used.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131,
        16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074,
        23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045,
        30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t95(df: int) -> float:
    """The two-sided 95% critical value of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        return math.nan
    return _T95[max(k for k in _T95 if k <= df)] if df <= 120 else 1.960


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation and 95% interval (Student's t) of some values."""

    n: int
    mean: float
    std: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The spread of ``values`` (std and interval are NaN for fewer than 2)."""
        n = len(values)
        if n == 0:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        mean = sum(values) / n
        if n == 1:
            return cls(1, mean, math.nan, math.nan, math.nan)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        half = t95(n - 1) * std / math.sqrt(n)
        return cls(n, mean, std, mean - half, mean + half)


def episodes(log: RunLog) -> list[tuple[int, float]]:
    """(step index, return) of every episode of a run, in order (see :mod:`rlobs._tally`)."""
    return RunTally.of(log).episodes


def run_value(log: RunLog, key: str) -> str | None:
    """A run's tag or param ``key`` (tags first; later updates win), as text."""
    return RunTally.of(log).value(key)


def rolling_mean(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over up to ``window`` values (shorter at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given; directories replaced by their ``*.jsonl`` files (sorted)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        out.extend(sorted(path.glob("*.jsonl")) if path.is_dir() else [path])
    return out
