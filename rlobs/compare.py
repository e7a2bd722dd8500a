"""Comparing runs across seeds: the public building blocks of ``rlobs compare``.

A run is reduced to a :class:`RunScore` — its *final* return (mean of its last ``last``
episodes) and its *mean* return (all episodes) — and runs are grouped by a tag or param
into :class:`GroupScore` (mean ± sample std across runs, 95% Student's t interval).
:func:`table` renders the groups, :func:`plot_groups` draws their learning curves and
:func:`report` prints both the way the CLI does. Any run source can use them: the JSONL
logs (:func:`compare`) or a tracking server's history (``rlobs compare-mlflow``).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from ._curves import Spread, expand_paths, rolling_mean
from ._exceptions import RlobsError, did_you_mean
from ._reader import RunLog
from ._tally import RunTally

MISSING = "(unset)"
"""The group of runs that lack the grouping key."""


@dataclass(frozen=True)
class RunScore:
    """One run's figures for comparison.

    Attributes:
        source: where the run came from (its JSONL path, or a tracking server's run id).
        group: the run's value of the grouping key (:data:`MISSING` if unset).
        final: mean return of its last ``last`` episodes.
        mean: mean return of all its episodes.
        episodes: (step, return) of every episode, in step order.
    """

    source: str
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


def check_last(last: int) -> None:
    """Raise :class:`RlobsError` unless ``last`` (episodes in a final return) is ≥ 1."""
    if last < 1:
        raise RlobsError(f"--last must be at least 1, not {last}")


def score_episodes(source: str, group: str | None, episodes: Sequence[tuple[int, float]],
                   last: int) -> RunScore | None:
    """A run's score from its episodes; ``None`` if it has none.

    Args:
        source: the run's label (path or id).
        group: its value of the grouping key, ``None`` when unset.
        episodes: (step, return) pairs in step order.
        last: how many trailing episodes make the final return.

    Returns:
        The score, or ``None`` for a run without episodes.
    """
    if not episodes:
        return None
    returns = [r for _, r in episodes]
    tail = returns[-last:]
    return RunScore(source, MISSING if group is None else group, sum(tail) / len(tail),
                    sum(returns) / len(returns), list(episodes))


def group_scores(scores: Iterable[RunScore]) -> list[GroupScore]:
    """Group run scores by their ``group``, sorted by group name."""
    groups: dict[str, list[RunScore]] = defaultdict(list)
    for scored in scores:
        groups[scored.group].append(scored)
    return [GroupScore(name, runs, Spread.of([r.final for r in runs]),
                       Spread.of([r.mean for r in runs]))
            for name, runs in sorted(groups.items())]


def _fmt(spread: Spread) -> tuple[str, str]:
    if spread.n < 2:
        return f"{spread.mean:.4g}", "—"
    return f"{spread.mean:.4g} ± {spread.std:.3g}", f"[{spread.low:.4g}, {spread.high:.4g}]"


def table(groups: Sequence[GroupScore], key: str, last: int) -> Table:
    """The comparison table (a rich :class:`~rich.table.Table`)."""
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
    """Draw each group's learning curve (mean over runs, ± 1 std band) to a PNG.

    Returns:
        ``out``.
    """
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


def report(groups: Sequence[GroupScore], skipped: Sequence[str], key: str, last: int,
           plot: str | None = None) -> None:
    """Print the table, the skipped runs and a one-run-group note; draw ``plot`` if set.

    Raises:
        RlobsError: no group (none of the runs has an episode).
    """
    from ._cli import console

    if not groups:
        raise RlobsError("none of the runs has an episode to compare")
    out = console()
    if not out.is_terminal:  # rich assumes 80 columns; a log file can take the whole table
        out = Console(file=out.file, width=120, highlight=False)
    out.print(table(groups, key, last))
    if skipped:
        console().print(f"[dim]skipped {len(skipped)} run(s) without episodes "
                        f"(e.g. sweep parents): {', '.join(skipped[:5])}"
                        f"{' …' if len(skipped) > 5 else ''}[/dim]")
    if any(math.isnan(g.final.std) for g in groups):
        console().print("[yellow]note:[/yellow] groups with one run have no spread; run "
                        "more seeds")
    if plot:
        console().print(f"wrote {plot_groups(groups, key, Path(plot))}")


def score(log: RunLog | RunTally, key: str, last: int) -> RunScore | None:
    """A JSONL run's final and mean episode return; ``None`` if it has no episodes."""
    tally = log if isinstance(log, RunTally) else RunTally.of(log)
    return score_episodes(str(tally.path), tally.value(key), tally.episodes, last)


def check_key(key: str, tallies: Sequence[RunTally]) -> None:
    """Raise :class:`RlobsError` when no run has the tag or param ``key`` (a typo would
    otherwise put every run in :data:`MISSING`)."""
    if any(t.value(key) is not None for t in tallies):
        return
    known = sorted({k for t in tallies for k in (*t.tags, *t.params)
                    if not k.startswith("rlobs.")})
    raise RlobsError(f"no run has a tag or param {key!r}{did_you_mean(key, known)}; "
                     f"their keys: {', '.join(known) or '(none)'}")


def compare(paths: Sequence[str | os.PathLike[str]], key: str,
            last: int = 10) -> tuple[list[GroupScore], list[Path]]:
    """Score and group JSONL run logs (``rlobs compare``).

    Args:
        paths: run ``.jsonl`` files, or directories of them.
        key: tag or param to group by (tags first; later updates win).
        last: episodes averaged into a run's final return.

    Returns:
        The groups (sorted by name) and the runs skipped for having no episodes.

    Raises:
        RlobsError: no path given, ``last`` < 1, or no run has ``key``.
        RunFileError: a file is not a run log.
    """
    files = expand_paths(paths)
    if not files:
        raise RlobsError("no run files to compare")
    check_last(last)
    tallies = [RunTally.read(path) for path in files]
    check_key(key, tallies)
    scores: list[RunScore] = []
    skipped: list[Path] = []
    for path, tally in zip(files, tallies, strict=True):
        scored = score(tally, key, last)
        if scored is None:
            skipped.append(path)
        else:
            scores.append(scored)
    return group_scores(scores), skipped


__all__ = ["MISSING", "GroupScore", "RunScore", "Spread", "check_key", "check_last", "compare",
           "group_scores", "plot_groups", "report", "score", "score_episodes", "table"]
