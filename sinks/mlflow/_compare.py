"""``rlobs compare-mlflow EXPERIMENT... --by KEY``: compare runs straight from MLflow.

The same comparison as ``rlobs compare`` on JSONL logs (:mod:`rlobs.compare`), read from a
tracking server instead: every run of the experiments tagged ``rlobs.run_id`` is scored
from its ``episode_return`` metric history (the sink logs one value per episode end, at
the step it ended) and grouped by a tag, else a param, as the JSONL version does. Runs
without episodes (sweep parents, crashed starts) are skipped and reported.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from typing import Any

from rlobs import RlobsError, redact_uri, require
from rlobs.compare import GroupScore, RunScore, check_last, group_scores, report, score_episodes

from ._mapping import sanitize_key
from ._sink import default_tracking_uri
from ._store import RUN_ID_TAG

EPISODE_METRIC = "episode_return"


def _experiment_ids(client: Any, experiments: Sequence[str]) -> list[str]:
    from mlflow.exceptions import MlflowException

    ids: list[str] = []
    for name_or_id in experiments:
        found = client.get_experiment_by_name(name_or_id)
        if found is None:
            try:
                found = client.get_experiment(name_or_id)
            except MlflowException:
                found = None
        if found is None:
            raise RlobsError(_unknown(client, name_or_id))
        ids.append(str(found.experiment_id))
    return ids


def _unknown(client: Any, wanted: str) -> str:
    """Why ``wanted`` names no experiment, with the close name and the ones there are."""
    names = sorted(e.name for e in client.search_experiments(max_results=1000))
    close = difflib.get_close_matches(wanted, names, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"no MLflow experiment named (or with id) {wanted!r}{hint}; experiments "
            f"there: {', '.join(names) or '(none)'} "
            "(a run is in the experiment it names, hub.run(..., experiment=...), else its "
            "parent's, else the sink's setting: see docs/mlflow.md)")


def _rlobs_runs(client: Any, experiment_ids: list[str]) -> list[Any]:
    """Every active run of the experiments that rlobs logged, oldest first."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, f"tags.`{RUN_ID_TAG}` LIKE '%'",
                                  max_results=1000, order_by=["attributes.start_time ASC"],
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def group_value(run: Any, key: str) -> str | None:
    """The run's tag ``key``, else its param ``key`` (names sanitised as the sink does)."""
    name = sanitize_key(key)
    tags, params = run.data.tags, run.data.params
    if name in tags:
        return str(tags[name])
    if name in params:
        return str(params[name])
    return None


def score_run(client: Any, run: Any, key: str, last: int) -> RunScore | None:
    """A run's score from its ``episode_return`` history; ``None`` without episodes."""
    history = client.get_metric_history(run.info.run_id, EPISODE_METRIC)
    episodes = [(m.step, m.value) for m in sorted(history, key=lambda m: (m.step, m.timestamp))]
    return score_episodes(run.info.run_id, group_value(run, key), episodes, last)


def compare_mlflow(tracking_uri: str | None, experiments: Sequence[str], key: str,
                   last: int = 10) -> tuple[list[GroupScore], list[str]]:
    """Score and group the rlobs runs of MLflow experiments.

    Args:
        tracking_uri: the MLflow tracking URI (``None``: see :func:`default_tracking_uri`).
        experiments: experiment names or ids.
        key: tag or param to group by (tags first).
        last: episodes averaged into a run's final return.

    Returns:
        The groups (sorted by name) and the names of runs skipped for having no episodes.

    Raises:
        RlobsError: no experiment given, an unknown experiment, or ``last`` < 1.
        SinkUnavailable: mlflow is not installed.
    """
    if not experiments:
        raise RlobsError("no MLflow experiment to compare")
    check_last(last)
    mlflow = require("mlflow", "mlflow")
    client = mlflow.tracking.MlflowClient(tracking_uri=default_tracking_uri(tracking_uri))
    scores: list[RunScore] = []
    skipped: list[str] = []
    for run in _rlobs_runs(client, _experiment_ids(client, experiments)):
        scored = score_run(client, run, key, last)
        if scored is None:
            skipped.append(run.info.run_name or run.info.run_id)
        else:
            scores.append(scored)
    return group_scores(scores), skipped


def _cmd_compare_mlflow(args: argparse.Namespace) -> int:
    uri = default_tracking_uri(args.tracking_uri)
    groups, skipped = compare_mlflow(uri, args.experiments, args.by, args.last)
    if not groups and not skipped:
        raise RlobsError(f"no rlobs runs in {', '.join(args.experiments)} at "
                         f"{redact_uri(uri)}")
    report(groups, skipped, args.by, args.last, args.plot)
    return 0


def register_compare(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``rlobs compare-mlflow EXPERIMENT... --by KEY [--last N] [--plot PNG] [--tracking-uri U]``.

    Registered as the ``compare-mlflow`` entry point of ``rlobs.commands``.
    """
    parser = sub.add_parser("compare-mlflow", help="like compare, for the rlobs runs of "
                            "MLflow experiments (read from the tracking server)")
    parser.add_argument("experiments", nargs="+", metavar="EXPERIMENT",
                        help="MLflow experiment name or id")
    parser.add_argument("--by", required=True, metavar="KEY",
                        help="tag or param to group by (e.g. algo)")
    parser.add_argument("--last", type=int, default=10, metavar="N",
                        help="episodes averaged into a run's final return (default 10)")
    parser.add_argument("--plot", metavar="PNG", help="also draw the learning curves here")
    parser.add_argument("--tracking-uri", default=None,
                        help="default: MLFLOW_TRACKING_URI, else the embedded SQLite store")
    parser.set_defaults(func=_cmd_compare_mlflow)
