"""With the mlflow and otel sinks both on, a run's OTel trace is listed on its MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow_support import client, experiment_name, find_run, poll
from servers import MlflowServer

import rlobs
from sinks.mlflow import MlflowSink
from sinks.otel import OtelSink

pytestmark = pytest.mark.slow


def test_run_traces_tab_lists_its_trace(mlflow_server: MlflowServer) -> None:
    """search_traces(run_id=...) on a real server finds the run's trace, with its spans,
    and the traces of its live windows."""
    c = client(mlflow_server.url)
    name = experiment_name()
    experiment_id = c.create_experiment(name)
    otel = OtelSink(f"{mlflow_server.url}/v1/traces", window_steps=5,
                    headers={"x-mlflow-experiment-id": experiment_id})
    with rlobs.Hub(["jsonl", MlflowSink(mlflow_server.url, name), otel], heartbeat_s=0,
                   provenance=False) as hub:
        with hub.run("linked") as run:
            for _ in range(12):  # steps 0-4 in the run's trace, 5-9 and 10-11 windows
                with run.span("actor.forward"):
                    pass
                run.step(1.0)
        with hub.run("unlinked-neighbour") as other:
            other.step(0.0)
        assert hub.flush(60)
    mlflow_run = poll(lambda: find_run(c, run.run_id))

    def linked() -> list[Any] | None:
        found = [t for t in c.search_traces(locations=[experiment_id],
                                            run_id=mlflow_run.info.run_id)
                 if t.info.state.value == "OK"]
        return found if len(found) >= 3 else None

    traces = poll(linked, 60)
    ids = run.trace_ids
    assert {t.info.trace_id for t in traces} == {
        f"tr-{t:032x}" for t in (ids.trace_id, ids.trace_of(1), ids.trace_of(2))}
    (trace,) = [t for t in traces if t.info.trace_id == f"tr-{ids.trace_hex}"]
    assert {s.name for s in trace.data.spans} >= {"invoke_agent linked", "step 4"}


def test_replay_keeps_one_trace_in_mlflow(mlflow_server: MlflowServer, runs_dir: Path) -> None:
    """A run exported live and then replayed (rlobs sync) is still one trace in MLflow,
    with each span once."""
    c = client(mlflow_server.url)
    experiment_id = c.create_experiment(experiment_name())

    def sink() -> OtelSink:
        return OtelSink(f"{mlflow_server.url}/v1/traces",
                        headers={"x-mlflow-experiment-id": experiment_id})

    with rlobs.Hub(["jsonl", sink()], heartbeat_s=0, provenance=False) as hub, \
            hub.run("replayed") as run:
        for _ in range(3):
            with run.span("actor.forward"):
                pass
            run.step(1.0)
    report = rlobs.sync([runs_dir / f"{run.run_id}.jsonl"], [sink()], force=True,
                        timeout_s=30)
    assert report.runs[0].sinks[0].state == "complete"
    (trace,) = poll(lambda: [t for t in c.search_traces(locations=[experiment_id])
                             if t.info.state.value == "OK"])
    assert trace.info.trace_id == f"tr-{run.trace_ids.trace_hex}"
    assert len(trace.data.spans) == 1 + 3 + 3
