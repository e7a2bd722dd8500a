"""Helpers for the MLflow tests: read back through a real ``MlflowClient``."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any


def client(uri: str) -> Any:
    """A real ``MlflowClient`` on ``uri``."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_name() -> str:
    """A fresh experiment name, so tests sharing a server never see each other's runs."""
    return f"test-{secrets.token_hex(4)}"


def find_run(c: Any, rlobs_id: str) -> Any | None:
    """The MLflow run tagged with an rlobs run id, if any."""
    from mlflow.entities import ViewType

    exps = [e.experiment_id for e in c.search_experiments()]
    runs = c.search_runs(exps, f"tags.`rlobs.run_id` = '{rlobs_id}'",
                         run_view_type=ViewType.ALL)
    assert len(runs) <= 1, f"{len(runs)} MLflow runs carry rlobs.run_id={rlobs_id}"
    return runs[0] if runs else None


def steps_of(c: Any, run_id: str, key: str) -> list[int]:
    """Sorted steps of every stored value of a metric (duplicates kept)."""
    return sorted(m.step for m in c.get_metric_history(run_id, key))


def poll(predicate: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    """Wait until ``predicate()`` is truthy (a bound on waiting, not a timing claim)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def all_traces(c: Any, experiment_id: str) -> list[Any]:
    """Every trace of an experiment, page after page (``search_traces`` returns 100 at a
    time, and a long run's windows of steps are traces of their own)."""
    out: list[Any] = []
    token = None
    while True:
        page = c.search_traces(locations=[experiment_id], max_results=500, page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return out
