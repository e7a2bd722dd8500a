"""With the mlflow and otel sinks both on, a run's OTel trace is listed on its MLflow run."""

from __future__ import annotations

import pytest
from mlflow_support import client, experiment_name, find_run, poll
from servers import MlflowServer

import rlobs
from sinks.mlflow import MlflowSink
from sinks.otel import OtelSink

pytestmark = pytest.mark.slow


def test_run_traces_tab_lists_its_trace(mlflow_server: MlflowServer) -> None:
    """search_traces(run_id=...) on a real server finds the run's trace, with its spans."""
    c = client(mlflow_server.url)
    name = experiment_name()
    experiment_id = c.create_experiment(name)
    otel = OtelSink(f"{mlflow_server.url}/v1/traces",
                    headers={"x-mlflow-experiment-id": experiment_id})
    with rlobs.Hub(["jsonl", MlflowSink(mlflow_server.url, name), otel], heartbeat_s=0,
                   provenance=False) as hub:
        with hub.run("linked") as run:
            for _ in range(3):
                with run.span("actor.forward"):
                    pass
                run.step(1.0)
        with hub.run("unlinked-neighbour") as other:
            other.step(0.0)
        assert hub.flush(60)
    mlflow_run = poll(lambda: find_run(c, run.run_id))
    traces = poll(lambda: [t for t in c.search_traces(locations=[experiment_id],
                                                      run_id=mlflow_run.info.run_id)
                           if t.info.state.value == "OK"], 60)
    (trace,) = traces
    assert trace.info.trace_id == f"tr-{run.trace_ids.trace_hex}"
    assert {s.name for s in trace.data.spans} >= {"invoke_agent linked", "step 2"}
