"""Turning steps and spans into MLflow metric points: downsampling and span statistics.

A point is ``(key, value, timestamp_ms, step)``. Everything depends on event contents and
event times only, never on when the sink sees them, so replaying a log yields the very
same points (which is what makes replay idempotent).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

from rlobs import ConfigError, Span, Step

from ._mapping import NonFinite, sanitize_key

Point = tuple[str, float, int, int]
"""``(key, value, timestamp_ms, step)`` of one metric value."""

_RESERVOIR = 65536  # bound on durations kept per span name for run-level percentiles


@dataclass(frozen=True)
class Downsample:
    """How step metrics are thinned (episode metrics are never thinned).

    ``every``: keep steps whose index is a multiple (1 = every step). ``window_s``: > 0
    aggregates each key per window of event time into mean (as ``key``), ``key.min``,
    ``key.max`` and ``key.last``.
    """

    every: int = 1
    window_s: float = 0.0

    @classmethod
    def parse(cls, text: str | None) -> Downsample:
        """``"every:N"``, ``"window:SECONDS"`` or empty.

        Raises:
            ConfigError: the text is neither.
        """
        if not text or not text.strip():
            return cls()
        kind, _, raw = text.strip().partition(":")
        try:
            if kind == "every" and int(raw) >= 1:
                return cls(every=int(raw))
            if kind == "window" and float(raw) > 0:
                return cls(window_s=float(raw))
        except ValueError:
            pass
        raise ConfigError(f"downsample {text!r}: use 'every:N' (N >= 1) or 'window:SECONDS'")

    def text(self) -> str:
        """The text form :meth:`parse` reads back (empty for every step)."""
        if self.window_s > 0:
            return f"window:{self.window_s!r}"
        return "" if self.every == 1 else f"every:{self.every}"


class StepPoints:
    """Converts one run's steps to points, applying the downsampling and NaN policy."""

    def __init__(self, downsample: Downsample) -> None:
        self.downsample = downsample
        self.nonfinite = NonFinite()
        self._keys: dict[str, str] = {}
        self._held: list[Point] = []  # the last thinned-out step, sent at the end
        self._window: dict[str, list[float]] = {}
        self._window_start = 0
        self._window_last = (0, 0)

    def _key(self, key: str) -> str:
        name = self._keys.get(key)
        if name is None:
            name = self._keys[key] = sanitize_key(key)
        return name

    def _add(self, out: list[Point], key: str, value: float, ms: int, step: int) -> None:
        if math.isfinite(value):
            out.append((key, value, ms, step))
        else:
            self.nonfinite.add(key, value, step)

    def add_point(self, out: list[Point], key: str, value: float, ms: int, step: int) -> None:
        """Append one value of metric ``key`` (sanitised; non-finite values counted)."""
        self._add(out, self._key(key), value, ms, step)

    def convert(self, event: Step, out: list[Point]) -> None:
        """Append the points of ``event`` to ``out``."""
        ms, step = event.time_ns // 1_000_000, event.step
        if event.episode_return is not None:
            self._add(out, "episode_return", event.episode_return, ms, step)
            self._add(out, "episode_length", float(event.episode_length or 0), ms, step)
        values = self._values(event)
        if self.downsample.window_s > 0:
            self._window_add(values, event.time_ns, ms, step, out)
        elif step // (every := self.downsample.every) != (step - event.env_steps) // every:
            # the indices this record stands for hold a multiple of ``every``
            self._held = []
            for key, value in values.items():
                self._add(out, key, value, ms, step)
        else:
            self._held = [(k, v, ms, step) for k, v in values.items()]

    def _values(self, event: Step) -> dict[str, float]:
        values = {"step_reward": event.reward, "cumulative_reward": event.cumulative_reward}
        for key, value in event.metrics.items():
            values[self._key(key)] = value
        return values

    def _window_add(self, values: Mapping[str, float], now_ns: int, ms: int, step: int,
                    out: list[Point]) -> None:
        if self._window and now_ns - self._window_start >= self.downsample.window_s * 1e9:
            self._window_close(out)
        if not self._window:
            self._window_start = now_ns
        self._window_last = (ms, step)
        for key, value in values.items():
            if not math.isfinite(value):
                self.nonfinite.add(key, value, step)
                continue
            acc = self._window.get(key)
            if acc is None:
                self._window[key] = [1.0, value, value, value, value]
            else:
                acc[0] += 1
                acc[1] += value
                acc[2] = min(acc[2], value)
                acc[3] = max(acc[3], value)
                acc[4] = value

    def _window_close(self, out: list[Point]) -> None:
        ms, step = self._window_last
        for key, (n, total, low, high, last) in self._window.items():
            out.append((key, total / n, ms, step))
            out.append((f"{key}.min", low, ms, step))
            out.append((f"{key}.max", high, ms, step))
            out.append((f"{key}.last", last, ms, step))
        self._window = {}

    def finish(self, out: list[Point]) -> None:
        """Append what downsampling still holds (the last step, the open window)."""
        for key, value, ms, step in self._held:
            self._add(out, key, value, ms, step)
        self._held = []
        if self._window:
            self._window_close(out)


def percentile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted values, nearest-rank."""
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def _stats(prefix: str, durations: list[float], ms: int, step: int) -> list[Point]:
    ordered = sorted(durations)
    return [
        (f"{prefix}.p50_ms", percentile(ordered, 0.50), ms, step),
        (f"{prefix}.p95_ms", percentile(ordered, 0.95), ms, step),
        (f"{prefix}.p99_ms", percentile(ordered, 0.99), ms, step),
        (f"{prefix}.mean_ms", sum(ordered) / len(ordered), ms, step),
        (f"{prefix}.count", float(len(ordered)), ms, step),
    ]


class SpanStats:
    """Per span name: percentiles over each interval of event time (``span.<name>.*``) and,
    for a run longer than one interval, over the whole run at its end
    (``span.<name>.run.*``, reservoir-sampled; for one interval they would be the same)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_ns = int(interval_s * 1e9)
        self._window: dict[str, list[float]] = {}
        self._run: dict[str, list[float]] = {}
        self._seen: dict[str, int] = {}
        self._start: int | None = None
        self._last = (0, 0)
        self._intervals = 0
        self._rng = random.Random(0)  # deterministic: a replay yields the same points

    def add(self, span: Span, out: list[Point]) -> None:
        """Record one span; append interval statistics to ``out`` when one closes."""
        if self._start is not None and span.end_ns - self._start >= self.interval_ns:
            self._close(out)
        if self._start is None:
            self._start = span.end_ns
        self._last = (span.end_ns // 1_000_000, span.step)
        ms = (span.end_ns - span.start_ns) / 1e6
        name = sanitize_key(span.name)
        self._window.setdefault(name, []).append(ms)
        seen = self._seen[name] = self._seen.get(name, 0) + 1
        pool = self._run.setdefault(name, [])
        if len(pool) < _RESERVOIR:
            pool.append(ms)
        elif (slot := self._rng.randrange(seen)) < _RESERVOIR:
            pool[slot] = ms

    def _close(self, out: list[Point]) -> None:
        ms, step = self._last
        for name, durations in self._window.items():
            out.extend(_stats(f"span.{name}", durations, ms, step))
        self._window = {}
        self._intervals += 1
        self._start = None

    def finish(self, ms: int, step: int, out: list[Point]) -> None:
        """Append the last interval and the run-level statistics."""
        if self._window:
            self._close(out)
        if self._intervals < 2:
            return
        for name, durations in self._run.items():
            out.extend(_stats(f"span.{name}.run", durations, ms, step))
