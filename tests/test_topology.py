"""The compose topology without docker: an example run against MLflow-on-PostgreSQL + OTLP.

``mlflow_server_pg`` stands in for the compose ``mlflow`` service (PostgreSQL store, one
worker, served artifacts). The compose collector forwards OTLP to MLflow's ``/v1/traces``
with the ``x-mlflow-experiment-id`` header; here the sink sends there directly, so the
header is set the way a user would set it, through ``OTEL_EXPORTER_OTLP_HEADERS``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow_support import client, experiment_name, steps_of
from servers import MlflowServer

from rlobs import RunLog, read_run

ROOT = Path(__file__).resolve().parents[1]
CELLS = 6
STEPS = 500  # examples/sweep.py: steps per cell

pytestmark = pytest.mark.slow

# One single-worker server takes metrics and spans on a 2-core machine shared with other
# work: allow slow requests, as a user with a busy server would.
PATIENCE = {"RLOBS_MLFLOW_REQUEST_TIMEOUT_S": "60", "OTEL_EXPORTER_OTLP_TIMEOUT": "30"}


def compose_env(server: MlflowServer, experiment: str, experiment_id: str,
                runs: Path) -> dict[str, str]:
    """The variables compose/README.md tells a user to export, aimed at ``server``."""
    return {
        **os.environ,
        "RLOBS_SINKS": "jsonl,mlflow,otel",
        "MLFLOW_TRACKING_URI": server.url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": server.url,  # the sink appends /v1/traces
        "OTEL_EXPORTER_OTLP_HEADERS": f"x-mlflow-experiment-id={experiment_id}",
        "RLOBS_MLFLOW_EXPERIMENT": experiment,  # runs and traces in one experiment
        "RLOBS_JSONL_DIR": str(runs),
        "PYTHONPATH": str(ROOT),
        **PATIENCE,
    }


def wait_for_spans(url: str, experiment_id: str, count: int, timeout_s: float = 60.0
                   ) -> list[Any]:
    """The experiment's traces once they hold ``count`` spans (a bound, not a timing)."""
    from mlflow import MlflowClient

    tracking = MlflowClient(tracking_uri=url)
    deadline = time.monotonic() + timeout_s
    while True:
        traces = list(tracking.search_traces(locations=[experiment_id]))
        if sum(len(t.data.spans) for t in traces) >= count or time.monotonic() > deadline:
            return traces
        time.sleep(0.5)


@pytest.fixture(scope="module")
def sweep(mlflow_server_pg: MlflowServer, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[str, str, dict[str, RunLog]]:
    """``examples/sweep.py`` run once as a user would; (experiment id, url, logs by name)."""
    name = experiment_name()
    experiment_id = str(client(mlflow_server_pg.url).create_experiment(name))
    runs = tmp_path_factory.mktemp("topology") / "runs"
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "sweep.py")],
                          env=compose_env(mlflow_server_pg, name, experiment_id, runs),
                          cwd=runs.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # No sink may have warned or failed: not in the example's output, not in the shipper's.
    assert not re.search(r"warning|error|unreachable", done.stdout + done.stderr,
                         re.IGNORECASE), done.stdout + done.stderr
    waited = subprocess.run([sys.executable, "-m", "rlobs", "sync", str(runs)],
                            env=compose_env(mlflow_server_pg, name, experiment_id, runs),
                            capture_output=True, text=True, timeout=300)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    shipper_logs = "".join(p.read_text() for p in (runs / ".rlobs").glob("*.log"))
    assert not re.search(r"\[(warning|error)", shipper_logs, re.IGNORECASE), shipper_logs
    logs = {(log := read_run(p)).start.name: log for p in runs.glob("*.jsonl")}
    return experiment_id, mlflow_server_pg.url, logs


def test_sweep_runs_reach_mlflow_finished_and_nested(
        sweep: tuple[str, str, dict[str, RunLog]]) -> None:
    """Parent and 6 cells are FINISHED in MLflow, each cell nested under the parent."""
    experiment_id, url, logs = sweep
    runs = client(url).search_runs([experiment_id])
    by_rlobs = {r.data.tags["rlobs.run_id"]: r for r in runs}
    assert sorted(by_rlobs) == sorted(log.start.run_id for log in logs.values())
    assert len(runs) == CELLS + 1 and {r.info.status for r in runs} == {"FINISHED"}
    parent = by_rlobs[logs["sweep-bandit"].start.run_id]
    children = [r for r in runs if r is not parent]
    assert {r.data.tags.get("mlflow.parentRunId") for r in children} == {parent.info.run_id}


def test_every_cell_step_is_in_mlflow_once(
        sweep: tuple[str, str, dict[str, RunLog]]) -> None:
    """Each cell's ``step_reward`` holds steps 0..499 once, with the JSONL log's rewards."""
    experiment_id, url, logs = sweep
    tracking = client(url)
    runs = {r.data.tags["rlobs.run_id"]: r for r in tracking.search_runs([experiment_id])}
    for index in range(CELLS):
        log = logs[f"sweep-bandit-cell{index}"]
        mlflow_id = runs[log.start.run_id].info.run_id
        assert steps_of(tracking, mlflow_id, "step_reward") == list(range(STEPS))
        history = sorted((m.step, m.value)
                         for m in tracking.get_metric_history(mlflow_id, "step_reward"))
        assert history == [(s.step, s.reward) for s in log.steps]


def test_sweep_summaries_reach_mlflow(sweep: tuple[str, str, dict[str, RunLog]]) -> None:
    """The parent's best score is the best of the cells' final scores, as MLflow has them."""
    experiment_id, url, logs = sweep
    runs = client(url).search_runs([experiment_id])
    parent_id = logs["sweep-bandit"].start.run_id
    (parent,) = [r for r in runs if r.data.tags["rlobs.run_id"] == parent_id]
    finals = [r.data.metrics["final_mean_reward"] for r in runs if r is not parent]
    assert len(finals) == CELLS
    assert parent.data.metrics["best_final_mean_reward"] == max(finals)
    assert parent.data.metrics["steps"] == 0 and parent.data.params["cells"] == str(CELLS)


def test_sweep_is_one_trace_in_mlflow(sweep: tuple[str, str, dict[str, RunLog]]) -> None:
    """OTLP reached MLflow: one trace, the sweep's span holding each cell's span and steps."""
    experiment_id, url, logs = sweep
    traces = wait_for_spans(url, experiment_id, 1 + CELLS * (1 + STEPS))
    assert len(traces) == 1
    (trace,) = traces
    assert trace.info.state.value == "OK"
    spans = list(trace.data.spans)
    (root,) = [s for s in spans if s.parent_id is None]
    assert root.name == "invoke_agent sweep-bandit"
    assert root.attributes["rlobs.run_id"] == logs["sweep-bandit"].start.run_id
    cells = {s.name: s for s in spans if s.parent_id == root.span_id}
    assert sorted(cells) == sorted(f"invoke_agent sweep-bandit-cell{i}" for i in range(CELLS))
    for cell in cells.values():
        steps = sorted(s.attributes["rlobs.step"] for s in spans
                       if s.parent_id == cell.span_id)
        assert steps == list(range(STEPS))
    assert len(spans) == 1 + CELLS * (1 + STEPS)
