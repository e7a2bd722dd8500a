"""``rlobs compare RUN.jsonl... --by KEY``: is one setting better than another, across seeds?

Runs are grouped by a tag or param (``algo``, ``lr``, ...). For each run: its *final*
return (mean of its last ``--last`` episodes) and its *mean* return (all episodes). For
each group: mean ± sample std across runs and a 95% interval (Student's t). ``--plot``
draws each group's learning curve: the mean over runs of each run's smoothed episode
return against steps, with a ± std band.
"""

from __future__ import annotations

import argparse
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from ._curves import Spread, episodes, expand_paths, rolling_mean, run_value
from ._exceptions import RlobsError
from ._reader import RunLog, read_run

MISSING = "(unset)"


@dataclass(frozen=True)
class RunScore:
    """One run's figures for comparison."""

    path: Path
    group: str
    final: float
    mean: float
    episodes: list[tuple[int, float]]


@dataclass(frozen=True)
class GroupScore:
    """One group's figures across its runs."""

    group: str
    runs: list[RunScore]
    final: Spread
    mean: Spread


def score(log: RunLog, key: str, last: int) -> RunScore | None:
    """A run's final and mean episode return; ``None`` if it has no episodes."""
    eps = episodes(log)
    if not eps:
        return None
    returns = [r for _, r in eps]
    tail = returns[-last:]
    return RunScore(log.path, run_value(log, key) or MISSING, sum(tail) / len(tail),
                    sum(returns) / len(returns), eps)


def compare(paths: Sequence[str | os.PathLike[str]], key: str,
            last: int = 10) -> tuple[list[GroupScore], list[Path]]:
    """Score and group runs.

    Returns:
        The groups (sorted by name) and the runs skipped for having no episodes.

    Raises:
        RlobsError: no path given, or ``last`` < 1.
        RunFileError: a file is not a run log.
    """
    files = expand_paths(paths)
    if not files:
        raise RlobsError("no run files to compare")
    if last < 1:
        raise RlobsError(f"--last must be at least 1, not {last}")
    groups: dict[str, list[RunScore]] = defaultdict(list)
    skipped: list[Path] = []
    for path in files:
        scored = score(read_run(path), key, last)
        if scored is None:
            skipped.append(path)
        else:
            groups[scored.group].append(scored)
    result = [GroupScore(name, runs, Spread.of([r.final for r in runs]),
                         Spread.of([r.mean for r in runs]))
              for name, runs in sorted(groups.items())]
    return result, skipped


def _fmt(spread: Spread) -> tuple[str, str]:
    if spread.n < 2:
        return f"{spread.mean:.4g}", "—"
    return f"{spread.mean:.4g} ± {spread.std:.3g}", f"[{spread.low:.4g}, {spread.high:.4g}]"


def table(groups: Sequence[GroupScore], key: str, last: int) -> Table:
    """The comparison table."""
    out = Table(title=f"episode return by {key}", box=box.SIMPLE_HEAD, pad_edge=False,
                caption=f"final: mean of each run's last {last} episodes; mean: over all "
                "its episodes; ± sample std across runs; CI: 95% Student's t")
    for column in (key, "runs", "episodes", "final", "final CI", "mean", "mean CI"):
        out.add_column(column, justify="left" if column == key else "right", no_wrap=True)
    for g in groups:
        n_eps = sum(len(r.episodes) for r in g.runs)
        out.add_row(g.group, str(len(g.runs)), str(n_eps), *_fmt(g.final), *_fmt(g.mean))
    return out


def plot_groups(groups: Sequence[GroupScore], key: str, out: Path, *,
                smooth: int = 10, points: int = 200) -> Path:
    """Draw each group's learning curve with its spread to a PNG."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax = fig.add_subplot()
    for g in groups:
        end = min(r.episodes[-1][0] for r in g.runs)
        grid = np.linspace(0, max(end, 1), points)
        curves = np.array([np.interp(grid, [s for s, _ in r.episodes],
                                     rolling_mean([v for _, v in r.episodes], smooth))
                           for r in g.runs])
        mean = curves.mean(axis=0)
        line, = ax.plot(grid, mean, lw=2, label=f"{key}={g.group} (n={len(g.runs)})")
        if len(g.runs) > 1:
            std = curves.std(axis=0, ddof=1)
            ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel(f"episode return (rolling mean of {smooth})")
    ax.set_title(f"learning curves by {key}: mean over runs, band ± 1 std")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


def _cmd_compare(args: argparse.Namespace) -> int:
    from ._cli import console

    groups, skipped = compare(args.paths, args.by, args.last)
    if not groups:
        raise RlobsError("none of the runs has an episode to compare")
    out = console()
    if not out.is_terminal:  # rich assumes 80 columns; a log file can take the whole table
        out = Console(file=out.file, width=120, highlight=False)
    out.print(table(groups, args.by, args.last))
    if skipped:
        console().print(f"[dim]skipped {len(skipped)} run(s) without episodes "
                        f"(e.g. sweep parents): {', '.join(p.name for p in skipped[:5])}"
                        f"{' …' if len(skipped) > 5 else ''}[/dim]")
    if any(math.isnan(g.final.std) for g in groups):
        console().print("[yellow]note:[/yellow] groups with one run have no spread; run "
                        "more seeds")
    if args.plot:
        console().print(f"wrote {plot_groups(groups, args.by, Path(args.plot))}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``rlobs compare RUN.jsonl... --by KEY [--last N] [--plot out.png]``."""
    parser = sub.add_parser("compare", help="final and mean episode return per group of "
                            "runs, mean ± std and 95%% interval across seeds")
    parser.add_argument("paths", nargs="+", help="run .jsonl files or directories of them")
    parser.add_argument("--by", required=True, metavar="KEY",
                        help="tag or param to group by (e.g. algo)")
    parser.add_argument("--last", type=int, default=10, metavar="N",
                        help="episodes averaged into a run's final return (default 10)")
    parser.add_argument("--plot", metavar="PNG", help="also draw the learning curves here")
    parser.set_defaults(func=_cmd_compare)
