"""Many processes, one run, on the compose backends: MLflow-on-PostgreSQL and OTLP.

8 spawned workers × 10,000 steps, each a child run of one parent, with the JSONL, MLflow
and OTel sinks on at once — every step must reach MLflow exactly once, and every run its
trace, through the one shipper the nine processes share. ``mlflow_server_pg`` is both the
tracking server and the OTLP receiver.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow_support import client, experiment_name, find_run, poll
from servers import MlflowServer

from rlobs import Hub, RunStatus, read_run, sync

WORKERS = 8
STEPS = 10_000
EPISODE = 500
# What docs/otel.md promises of a long run's trace: every step up to 1000 has a span,
# then every 100th (the sink's defaults).
STEP_SPANS = [*range(1000), *range(1000, STEPS, 100)]

pytestmark = pytest.mark.slow


def _worker(index: int, parent_id: str) -> None:
    """One worker process: its own hub from the environment, one child run of the parent."""
    with Hub(heartbeat_s=0) as hub, \
            hub.run(f"rollout-worker{index}", parent=parent_id,
                    tags={"worker": str(index)}) as run:
        for k in range(STEPS):
            run.step(float(k), done=(k % EPISODE == EPISODE - 1))


@pytest.fixture(scope="module")
def rollout(mlflow_server_pg: MlflowServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[str, str, Path]]:
    """Run the rollout once; yields (parent rlobs run id, experiment id, JSONL directory)."""
    name = experiment_name()
    experiment_id = str(client(mlflow_server_pg.url).create_experiment(name))
    runs = tmp_path_factory.mktemp("rollout") / "runs"
    with pytest.MonkeyPatch.context() as env:  # what spawned workers inherit, too
        for key, value in {
            "RLOBS_SINKS": "jsonl,mlflow,otel", "RLOBS_JSONL_DIR": str(runs),
            "RLOBS_HANDLE_SIGNALS": "0", "MLFLOW_TRACKING_URI": mlflow_server_pg.url,
            "OTEL_EXPORTER_OTLP_ENDPOINT": mlflow_server_pg.url,
            "OTEL_EXPORTER_OTLP_HEADERS": f"x-mlflow-experiment-id={experiment_id}",
            "RLOBS_MLFLOW_EXPERIMENT": name,
            # One server takes 160k metric values and ~9k spans from 9 processes on a
            # shared 2-core machine: allow slow requests. Step metrics are not downsampled.
            "RLOBS_MLFLOW_REQUEST_TIMEOUT_S": "60", "OTEL_EXPORTER_OTLP_TIMEOUT": "30",
        }.items():
            env.setenv(key, value)
        parent_id = _run_parent(mlflow_server_pg.url)
        # The workers exited long ago; the directory's one shipper finishes the delivery.
        report = sync([runs], timeout_s=300)
        assert report.complete, report
        assert len(report.runs) == WORKERS + 1
    yield parent_id, experiment_id, runs


def _run_parent(url: str) -> str:
    ctx = multiprocessing.get_context("spawn")  # the parent's hub threads must not be forked
    with Hub(heartbeat_s=0) as hub, hub.run("rollout", params={"workers": WORKERS}) as parent:
        # A child finds its MLflow parent by the parent's rlobs id when the child's run is
        # created; the parent's run is created asynchronously, so wait until it exists.
        assert poll(lambda: find_run(client(url), parent.run_id), timeout_s=30)
        procs = [ctx.Process(target=_worker, args=(i, parent.run_id)) for i in range(WORKERS)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=150)
        assert [p.exitcode for p in procs] == [0] * WORKERS
    return parent.run_id


def _mlflow_runs(url: str, experiment_id: str) -> dict[str, Any]:
    """The experiment's MLflow runs by run name."""
    return {r.data.tags["rlobs.name"]: r for r in client(url).search_runs([experiment_id])}


def test_every_step_reaches_mlflow_exactly_once(
        rollout: tuple[str, str, Path], mlflow_server_pg: MlflowServer) -> None:
    """Each worker's ``step_reward`` holds steps 0..9999 once each, with their values."""
    _, experiment_id, _ = rollout
    tracking = client(mlflow_server_pg.url)
    runs = _mlflow_runs(mlflow_server_pg.url, experiment_id)
    for index in range(WORKERS):
        history = tracking.get_metric_history(runs[f"rollout-worker{index}"].info.run_id,
                                              "step_reward")
        counts = Counter((m.step, m.value) for m in history)
        assert set(counts) == {(k, float(k)) for k in range(STEPS)}, f"worker {index}"
        assert [p for p, n in counts.items() if n > 1] == [], f"worker {index} duplicates"


def test_children_are_finished_under_the_parent_in_mlflow(
        rollout: tuple[str, str, Path], mlflow_server_pg: MlflowServer) -> None:
    """9 FINISHED runs; each worker's carries ``mlflow.parentRunId`` of the parent's run."""
    parent_id, experiment_id, _ = rollout
    runs = _mlflow_runs(mlflow_server_pg.url, experiment_id)
    assert len(runs) == WORKERS + 1
    assert {n: r.info.status for n, r in runs.items() if r.info.status != "FINISHED"} == {}
    parent = runs.pop("rollout")
    assert parent.data.tags["rlobs.run_id"] == parent_id
    assert {r.data.tags.get("mlflow.parentRunId") for r in runs.values()} == {
        parent.info.run_id}
    assert {r.data.metrics["steps"] for r in runs.values()} == {STEPS}
    assert {r.data.metrics["episodes"] for r in runs.values()} == {STEPS // EPISODE}


def test_every_step_is_in_the_jsonl_logs_once(rollout: tuple[str, str, Path]) -> None:
    """The JSONL sink, on beside the others, has each worker's 10k steps in order."""
    parent_id, _, runs = rollout
    children = [log for p in runs.glob("*.jsonl")
                if (log := read_run(p)).start.run_id != parent_id]
    assert len(children) == WORKERS
    for child in children:
        assert child.start.parent_id == parent_id
        assert [s.step for s in child.steps] == list(range(STEPS))
        assert child.end is not None and child.end.status is RunStatus.FINISHED
        assert dict(child.end.dropped) == {}


def _traces(url: str, experiment_id: str) -> list[Any]:
    """The experiment's traces once all 9 root spans and sampled steps are stored."""
    want = 1 + WORKERS * (1 + len(STEP_SPANS))

    def stored() -> list[Any] | None:
        traces = list(client(url).search_traces(locations=[experiment_id]))
        return traces if sum(len(t.data.spans) for t in traces) >= want else None

    return poll(stored, timeout_s=60) or list(client(url).search_traces(
        locations=[experiment_id]))


def test_the_rollout_is_one_trace_with_a_span_per_worker(
        rollout: tuple[str, str, Path], mlflow_server_pg: MlflowServer) -> None:
    """OTLP reached MLflow: one trace, the parent's run span holding each worker's run
    span, each with its sampled steps (the shipper nests runs across processes)."""
    parent_id, experiment_id, _ = rollout
    (trace,) = _traces(mlflow_server_pg.url, experiment_id)
    spans = list(trace.data.spans)
    (root,) = [s for s in spans if s.parent_id is None]
    assert root.name == "invoke_agent rollout"
    assert root.attributes["rlobs.run_id"] == parent_id
    assert trace.info.state.value == "OK"
    workers = {s.name: s for s in spans if s.parent_id == root.span_id}
    assert sorted(workers) == sorted(f"invoke_agent rollout-worker{i}" for i in range(WORKERS))
    for worker in workers.values():
        assert worker.attributes["rlobs.parent_run_id"] == parent_id
        assert worker.attributes["rlobs.steps"] == STEPS
        assert worker.attributes["rlobs.steps_skipped"] == STEPS - len(STEP_SPANS)
        steps = sorted(s.attributes["rlobs.step"] for s in spans
                       if s.parent_id == worker.span_id)
        assert steps == STEP_SPANS


def test_one_shipper_shipped_every_run(rollout: tuple[str, str, Path]) -> None:
    """Nine processes wrote to one directory with one configuration: one shipper."""
    _, _, runs = rollout
    starts = {read_run(p).start.shipper for p in runs.glob("*.jsonl")}
    assert len(starts) == 1 and None not in starts
    assert len(list((runs / ".rlobs").glob("shipper-*.lock"))) == 1


def test_no_mlflow_values_were_lost(rollout: tuple[str, str, Path],
                                    mlflow_server_pg: MlflowServer) -> None:
    """No worker's run is tagged with gaps: nothing was dropped on the way to MLflow."""
    _, experiment_id, _ = rollout
    runs = _mlflow_runs(mlflow_server_pg.url, experiment_id)
    assert [n for n, r in runs.items() if "rlobs.mlflow.gaps" in r.data.tags] == []
