"""``rlobs plot RUN.jsonl -o reward.png``: a run on one page.

Panels: the step reward with its rolling mean; the episode returns with their rolling
mean; each step metric (losses first, up to six) with its rolling mean; and a latency
histogram of the run's most frequent spans (e.g. ``actor.forward``) with their p50/p99.
Counts (steps, spans) are on integer axes. matplotlib is imported only here.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from ._curves import rolling_mean
from ._reader import RunLog, read_run
from ._tally import LATEST, RunTally, resolve_run

_MAX_POINTS = 4000
_TOP_SPANS = 4
_TOP_METRICS = 6
_EPISODE_KEYS = ("episode_return", "episode_length", "episodes_ended")


def _thin(xs: list[int], ys: list[float]) -> tuple[list[int], list[float]]:
    """At most ``_MAX_POINTS`` evenly spaced points (a PNG cannot show more)."""
    every = max(1, len(xs) // _MAX_POINTS)
    return xs[::every], ys[::every]


def _title(tally: RunTally) -> str:
    status = tally.status or "no end recorded"
    return (f"{tally.name} ({tally.run_id}) — {status}, {tally.steps:,} steps, "
            f"{tally.episode_count:,} episodes, {tally.duration_s:.3g} s")


def _empty(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes,
            color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _rewards(ax: Any, log: RunLog) -> None:
    steps = log.steps
    ax.set_title("step reward", loc="left")
    if not steps:
        _empty(ax, "no steps recorded")
        return
    xs = [s.step for s in steps]
    ys = [s.reward for s in steps]
    window = max(10, len(steps) // 20)
    tx, ty = _thin(xs, ys)
    ax.plot(tx, ty, lw=0.5, color="0.75", label="reward")
    mx, my = _thin(xs, rolling_mean(ys, window))
    ax.plot(mx, my, lw=1.8, color="C0", label=f"rolling mean ({window} steps)")
    ax.set_xlabel("step")
    if min(ys) == max(ys):  # e.g. CartPole: +1 per step; the episode returns tell more
        ax.text(0.5, 0.3, f"every step's reward is {ys[0]:g}", ha="center",
                transform=ax.transAxes, color="0.4")
    ax.legend(loc="upper left", fontsize="small", framealpha=0.9)


def _returns(ax: Any, tally: RunTally) -> None:
    eps = tally.episodes
    ax.set_title("episode return", loc="left")
    if not eps:
        _empty(ax, "no episode ended")
        return
    xs = [s for s, _ in eps]
    ys = [r for _, r in eps]
    window = max(5, len(eps) // 20)
    ax.scatter(xs, ys, s=10, color="C1", alpha=0.6, linewidths=0, label="episode")
    ax.plot(xs, rolling_mean(ys, window), lw=2, color="C3",
            label=f"rolling mean ({window} episodes)")
    ax.set_xlabel("step at episode end")
    best = max(ys)
    ax.set_ylim(min(ys) - 0.05 * abs(best or 1), best + 0.1 * abs(best or 1))
    ax.legend(loc="lower right", fontsize="small")


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def _duration(value: float, unit: str) -> str:
    """A duration in ``unit`` as text in the unit that reads best."""
    micros = value * (1e3 if unit == "ms" else 1.0)
    if micros < 1e3:
        return f"{micros:.3g} µs"
    if micros < 1e6:
        return f"{micros / 1e3:.3g} ms"
    return f"{micros / 1e6:.3g} s"


def _latency(ax: Any, log: RunLog) -> None:
    import numpy as np

    spans = log.spans
    ax.set_title("span latency", loc="left")
    if not spans:
        _empty(ax, "no spans recorded (no sink took spans, or none were timed)")
        return
    names = [name for name, _ in Counter(s.name for s in spans).most_common(_TOP_SPANS)]
    all_ns = sorted(s.end_ns - s.start_ns for s in spans)
    unit, scale = ("µs", 1e3) if _percentile([float(v) for v in all_ns], 0.5) < 1e6 \
        else ("ms", 1e6)
    durations = {n: sorted((s.end_ns - s.start_ns) / scale for s in spans if s.name == n)
                 for n in names}
    low = max(1e-4, min(d[0] for d in durations.values()))
    high = max(d[-1] for d in durations.values())
    bins = np.geomspace(low, max(high, low * 1.01), 60)
    for i, (name, values) in enumerate(durations.items()):
        p50, p99 = _percentile(values, 0.5), _percentile(values, 0.99)
        ax.hist(np.clip(values, low, None), bins=bins, histtype="stepfilled", alpha=0.35,
                color=f"C{i}", edgecolor=f"C{i}",
                label=f"{name}: p50 {_duration(p50, unit)}, p99 {_duration(p99, unit)} "
                      f"(n={len(values):,})")
        ax.axvline(p50, color=f"C{i}", lw=1, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel(f"duration ({unit}, log scale; dashed: p50)")
    ax.set_ylabel("spans")
    ax.legend(loc="upper right", fontsize="small")


def metric_names(tally: RunTally) -> list[str]:
    """The step metrics a plot draws: losses first, then the others in order of first
    appearance (episode figures have their own panel), at most ``_TOP_METRICS``."""
    keys = [k for k in tally.metric_keys if k not in _EPISODE_KEYS]
    return sorted(keys, key=lambda k: "loss" not in k.lower())[:_TOP_METRICS]


def _metric(ax: Any, log: RunLog, key: str) -> None:
    points = [(s.step, s.metrics[key]) for s in log.steps if key in s.metrics]
    ax.set_title(key, loc="left")
    xs, ys = [p for p, _ in points], [v for _, v in points]
    window = max(5, len(points) // 20)
    tx, ty = _thin(xs, ys)
    ax.plot(tx, ty, lw=0.5, color="0.7", label=key)
    mx, my = _thin(xs, rolling_mean(ys, window))
    ax.plot(mx, my, lw=1.6, color="C2", label=f"rolling mean ({window} values)")
    ax.set_xlabel("step")
    ax.legend(loc="best", fontsize="small", framealpha=0.9)


def plot_run(log: RunLog, out: Path) -> Path:
    """Draw the run's reward curve, episode returns, step metrics (losses first) and span
    latencies to ``out``."""
    fig = run_figure(log)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def run_figure(log: RunLog) -> Any:
    """The matplotlib figure :func:`plot_run` saves."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    tally = RunTally.of(log)
    metrics = metric_names(tally)
    rows = 3 + (len(metrics) + 1) // 2
    fig = Figure(figsize=(10, 3.3 * rows), layout="constrained")
    grid = fig.add_gridspec(rows, 2)
    wide = [fig.add_subplot(grid[0, :]), fig.add_subplot(grid[1, :])]
    small = [fig.add_subplot(grid[2 + i // 2, i % 2]) for i in range(len(metrics))]
    latency = fig.add_subplot(grid[rows - 1, :])
    _rewards(wide[0], log)
    _returns(wide[1], tally)
    for ax, key in zip(small, metrics, strict=True):
        _metric(ax, log, key)
    _latency(latency, log)
    for ax in (*wide, *small):
        ax.grid(alpha=0.3)
        if tally.steps:  # every step panel spans the whole run, on whole steps
            ax.set_xlim(0, max(1, tally.steps - 1))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    latency.grid(alpha=0.3)
    latency.yaxis.set_major_locator(MaxNLocator(integer=True))  # span counts are whole
    fig.suptitle(_title(tally), fontsize="medium")
    return fig


def _cmd_plot(args: argparse.Namespace) -> int:
    from ._cli import console

    path = resolve_run(args.path)
    out = Path(args.output) if args.output else path.with_suffix(".png")
    console().print(f"wrote {plot_run(read_run(path), out)}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``rlobs plot RUN.jsonl [-o reward.png]``."""
    parser = sub.add_parser("plot", help="draw a run's reward curve, episode returns and "
                            "span latency histogram to a PNG")
    parser.add_argument("path", metavar="RUN", nargs="?", default=LATEST,
                        help="a run's .jsonl file, a directory (its latest run), a run id, "
                        "or 'latest' (the default)")
    parser.add_argument("-o", "--output", metavar="PNG",
                        help="where to write (default: beside the run file, .png)")
    parser.set_defaults(func=_cmd_plot)
