"""``auto``: build each candidate backend, measure it briefly, keep the fastest that works.

Measured, not assumed: on a 2-core CPU ``torch.jit.script`` cuts a small actor's latency
by a third to a half while ``torch.compile`` doubles it; on an H100 a CUDA graph wins.
Candidates are timed in interleaved rounds (so a noisy neighbour hurts them all alike) and
compared on their best round's per-call mean: on a shared machine most rounds carry
someone else's load, the best one is closest to the backend's own cost.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch

from .._log import logger
from ._backends import Built, build

CPU_CANDIDATES = ("onnx", "script", "eager")
"""What ``auto`` tries on CPU. ``export`` is left out because its first build compiles
C++ for tens of seconds (cached on disk after; pass ``candidates`` to include it), and
``compile`` because its first build takes 7–20 s here and it measured slower than eager at
every batch size. ``onnx`` needs the ``rlobs[onnx]`` extra; without it, it is skipped."""

CUDA_CANDIDATES = ("cudagraph", "script", "eager")
"""What ``auto`` tries on CUDA (``compile`` left out for the same reasons)."""

MARGIN = 0.05
"""A backend must beat eager's time by this fraction to be chosen over it: eager is the
simplest thing that works, and timings on a shared machine wobble by a few percent."""

WARMUP_CALLS = 20
ROUNDS = 9
CALLS_PER_ROUND = 20
BUDGET_S = 1.0
"""Wall time the timing may take, all candidates together (building them is apart): past
it, warm-up and rounds stop early (at least one round is timed). A small actor takes a
tenth of it."""


class Selection(NamedTuple):
    """What ``auto`` measured and chose."""

    backend: str
    reason: str
    per_call_ms: Mapping[str, float]
    """Best-round per-call time of each candidate that built, in ms."""
    failed: Mapping[str, str]
    """Candidates that could not be built, with why."""


def _per_call_ms(fn: Callable[..., Any], example: Sequence[Any], calls: int,
                 sync: Callable[[], None] | None) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn(*example)
    if sync is not None:
        sync()
    return (time.perf_counter_ns() - start) / calls / 1e6


def measure(fns: Mapping[str, Callable[..., Any]], example: Sequence[Any],
            sync: Callable[[], None] | None) -> dict[str, float]:
    """Best over interleaved rounds of each callable's mean per-call time (ms), within
    :data:`BUDGET_S`."""
    rounds: dict[str, list[float]] = {name: [] for name in fns}
    deadline = time.monotonic() + BUDGET_S
    with torch.inference_mode():
        for fn in fns.values():
            # A slow actor warms up on fewer calls: each candidate gets its share of a
            # quarter of the budget.
            _per_call_ms(fn, example, 1, sync)
            share = time.monotonic() + BUDGET_S / 4 / len(fns)
            for _ in range(WARMUP_CALLS - 1):
                if time.monotonic() > share:
                    break
                _per_call_ms(fn, example, 1, sync)
        for _ in range(ROUNDS):
            for name, fn in fns.items():
                rounds[name].append(_per_call_ms(fn, example, CALLS_PER_ROUND, sync))
            if time.monotonic() > deadline:
                break
    return {name: min(times) for name, times in rounds.items()}


def choose(module: torch.nn.Module, method: str, candidates: Sequence[str],
           example: Sequence[Any], options: Mapping[str, Mapping[str, Any]],
           sync: Callable[[], None] | None) -> tuple[Built, Selection]:
    """Build every candidate on ``example``, time the ones that work, pick the fastest."""
    built: dict[str, Built] = {}
    failed: dict[str, str] = {}
    for name in dict.fromkeys([*candidates, "eager"]):
        missing = _missing_extra(name)
        if missing is not None:  # a default candidate without its extra: no warning
            failed[name] = missing
            continue
        result = build(module, method, name, example=example, options=options.get(name))
        if result.reason is None:
            built[name] = result
        else:
            failed[name] = result.reason
    times = measure({name: b.fn for name, b in built.items()}, example, sync)
    best = min(times, key=times.__getitem__)
    if best != "eager" and times[best] > times["eager"] * (1 - MARGIN):
        best = "eager"
    ranking = " < ".join(f"{name} {ms:.4f} ms" for name, ms in sorted(times.items(),
                                                                     key=lambda kv: kv[1]))
    reason = f"fastest per call on {_shape(example)}: {ranking}"
    if best == "eager" and min(times, key=times.__getitem__) != "eager":
        reason += f" (within {MARGIN:.0%} of eager: kept eager)"
    selection = Selection(best, reason, times, failed)
    logger.info("actor backend chosen", module=type(module).__name__, method=method,
                backend=best, reason=reason, failed=failed or None)
    return built[best], selection


def _missing_extra(backend: str) -> str | None:
    if backend == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install rlobs[onnx])"
    return None


def _shape(example: Sequence[Any]) -> str:
    shapes = [tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
              for a in example]
    return ", ".join(str(s) for s in shapes) or "no inputs"
