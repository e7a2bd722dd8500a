"""``rlobs compare RUN.jsonl... --by KEY``: is one setting better than another, across seeds?

Runs are grouped by a tag or param (``algo``, ``lr``, ...). For each run: its *final*
return (mean of its last ``--last`` episodes) and its *mean* return (all episodes). For
each group: mean ± sample std across runs and a 95% interval (Student's t). ``--plot``
draws each group's learning curve: the mean over runs of each run's smoothed episode
return against steps, with a ± std band. The reusable parts live in :mod:`rlobs.compare`.
"""

from __future__ import annotations

import argparse

from .compare import (
    MISSING,
    GroupScore,
    RunScore,
    compare,
    plot_groups,
    report,
    score,
    table,
)

__all__ = ["MISSING", "GroupScore", "RunScore", "compare", "plot_groups", "register",
           "score", "table"]


def _cmd_compare(args: argparse.Namespace) -> int:
    groups, skipped = compare(args.paths, args.by, args.last)
    report(groups, [p.name for p in skipped], args.by, args.last, args.plot)
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
