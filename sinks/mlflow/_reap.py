"""``rlobs reap``: end MLflow runs whose process died without ending them.

A SIGKILLed process or a lost host leaves its run ``RUNNING`` forever. Every live rlobs
run refreshes its ``rlobs.heartbeat_ns`` tag (every ``RLOBS_HEARTBEAT_S``); ``reap`` marks
``KILLED`` the ``RUNNING`` runs carrying an ``rlobs.run_id`` tag whose heartbeat is older
than a threshold, with the last heartbeat as end time. Runs of other tools are never
touched. Safe to run from cron and concurrently: ending an ended run changes nothing.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

from rlobs import redact_uri, require

from ._store import HEARTBEAT_TAG, RUN_ID_TAG


@dataclass(frozen=True)
class Reaped:
    """A run ``reap`` found dead (and ended, unless dry run)."""

    mlflow_run_id: str
    rlobs_run_id: str
    name: str
    experiment_id: str
    silent_s: float


def _last_sign_of_life_ms(run: Any) -> int:
    raw = run.data.tags.get(HEARTBEAT_TAG)
    try:
        return int(raw) // 1_000_000
    except (TypeError, ValueError):
        return int(run.info.start_time or 0)


def find_dead_runs(client: Any, older_than_s: float, experiments: list[str] | None = None,
                   now_ms: int | None = None) -> list[tuple[Reaped, int]]:
    """``RUNNING`` rlobs runs silent for more than ``older_than_s``, with their last sign
    of life (ms)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if experiments:
        ids = [_experiment_id(client, e) for e in experiments]
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
    found: list[tuple[Reaped, int]] = []
    token = None
    while ids:
        page = client.search_runs(ids, "attributes.status = 'RUNNING'", max_results=1000,
                                  page_token=token)
        for run in page:
            rlobs_id = run.data.tags.get(RUN_ID_TAG)
            last = _last_sign_of_life_ms(run)
            if rlobs_id is None or now_ms - last <= older_than_s * 1000:
                continue
            found.append((Reaped(run.info.run_id, rlobs_id, run.info.run_name or "",
                                 run.info.experiment_id, (now_ms - last) / 1000), last))
        token = page.token
        if not token:
            break
    return found


def _experiment_id(client: Any, name_or_id: str) -> str:
    found = client.get_experiment_by_name(name_or_id)
    return str(found.experiment_id) if found is not None else name_or_id


def reap(client: Any, older_than_s: float, *, experiments: list[str] | None = None,
         dry_run: bool = False) -> list[Reaped]:
    """Mark dead rlobs runs ``KILLED`` (see module docstring).

    Args:
        client: an ``MlflowClient``.
        older_than_s: heartbeat silence, in seconds, after which a run is dead.
        experiments: experiment names or ids to look in (default: all).
        dry_run: only report.

    Returns:
        The runs ended (or that would be).
    """
    dead = find_dead_runs(client, older_than_s, experiments)
    for run, last_ms in dead:
        if not dry_run:
            client.set_tag(run.mlflow_run_id, "rlobs.status", "killed")
            client.set_tag(run.mlflow_run_id, "rlobs.error",
                           f"reaped: no heartbeat for {run.silent_s:.0f}s")
            client.set_terminated(run.mlflow_run_id, status="KILLED", end_time=last_ms)
    return [run for run, _ in dead]


def _cmd_reap(args: argparse.Namespace) -> int:
    from rich.console import Console

    mlflow = require("mlflow", "mlflow")
    from ._sink import default_tracking_uri

    uri = default_tracking_uri(args.tracking_uri)
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    reaped = reap(client, args.older_than, experiments=args.experiment or None,
                  dry_run=args.dry_run)
    console = Console(highlight=False)
    verb = "would mark" if args.dry_run else "marked"
    for run in reaped:
        console.print(f"{verb} KILLED: {run.mlflow_run_id} ({run.name}, rlobs "
                      f"{run.rlobs_run_id}, experiment {run.experiment_id}): no heartbeat "
                      f"for {run.silent_s:.0f}s")
    console.print(f"{len(reaped)} run(s) {verb} KILLED in {redact_uri(uri)}")
    return 0


def register_cli(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``rlobs reap [--older-than S] [--experiment NAME]... [--dry-run] [--tracking-uri U]``."""
    parser = sub.add_parser("reap", help="mark MLflow runs KILLED whose rlobs heartbeat "
                            "stopped (a SIGKILLed process); safe from cron")
    parser.add_argument("--older-than", type=float, default=600.0, metavar="SECONDS",
                        help="heartbeat silence after which a run is dead (default 600)")
    parser.add_argument("--experiment", action="append", metavar="NAME",
                        help="only this experiment (name or id); repeatable")
    parser.add_argument("--dry-run", action="store_true", help="report, change nothing")
    parser.add_argument("--tracking-uri", default=None,
                        help="default: MLFLOW_TRACKING_URI, else the embedded SQLite store")
    parser.set_defaults(func=_cmd_reap)
