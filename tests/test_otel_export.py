"""OpenTelemetry sink against real receivers: MLflow's OTLP endpoint, and none at all."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from servers import MlflowServer, free_port

import rlobs
from rlobs import RunStart, Span, Step
from rlobs._records import deliveries
from rlobs.testing import RecordingSink
from sinks.otel import OtelSink

pytestmark = pytest.mark.slow


def _traces(url: str, experiment_id: str, count: int) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)
    deadline = time.monotonic() + 30
    while True:  # the server stores spans as they come; wait for every root span
        traces = list(client.search_traces(locations=[experiment_id]))
        done = [t for t in traces if t.info.state.value in ("OK", "ERROR")]
        if len(done) >= count or time.monotonic() > deadline:
            return traces
        time.sleep(0.2)


def _experiment(url: str, name: str) -> str:
    from mlflow import MlflowClient

    return str(MlflowClient(tracking_uri=url).create_experiment(name))


def _run_agent(sink: OtelSink, recording: RecordingSink, *, fail: bool = False) -> None:
    with rlobs.Hub([sink, recording], heartbeat_s=0, provenance=False) as hub, \
            pytest.raises(RuntimeError) if fail else _nothing(), \
            hub.run("cartpole-ppo", params={"lr": 3e-4}) as run:
        for _ in range(3):
            with run.span("actor.forward"), run.span("actor.mlp"):
                time.sleep(0.002)
            run.step(1.0)
        if fail:
            raise RuntimeError("nan loss")


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _sink(server: MlflowServer, experiment_id: str) -> OtelSink:
    return OtelSink(f"{server.url}/v1/traces",
                    headers={"x-mlflow-experiment-id": experiment_id})


def test_mlflow_receives_the_span_tree(mlflow_server: MlflowServer) -> None:
    """MLflow stores run → step → span → nested span with the right parents and names."""
    experiment_id = _experiment(mlflow_server.url, "otel-tree")
    recording = RecordingSink()
    _run_agent(_sink(mlflow_server, experiment_id), recording)
    (trace,) = _traces(mlflow_server.url, experiment_id, 1)
    spans = {s.span_id: s for s in trace.data.spans}
    by_name: dict[str, list[Any]] = {}
    for span in spans.values():
        by_name.setdefault(span.name, []).append(span)
    (root,) = by_name["invoke_agent cartpole-ppo"]
    assert root.parent_id is None
    assert sorted(by_name) == ["actor.forward", "actor.mlp", "invoke_agent cartpole-ppo",
                               "step 0", "step 1", "step 2"]
    for k in range(3):
        (step,) = by_name[f"step {k}"]
        assert step.parent_id == root.span_id
        (forward,) = [s for s in by_name["actor.forward"] if s.parent_id == step.span_id]
        (mlp,) = [s for s in by_name["actor.mlp"] if s.parent_id == forward.span_id]
        assert mlp.attributes["rlobs.step"] == k
    assert root.span_type == "AGENT"
    assert by_name["step 0"][0].span_type == "CHAIN"


def test_mlflow_keeps_statuses_and_durations(mlflow_server: MlflowServer) -> None:
    """The run's ERROR status and every span's recorded start and end survive the trip."""
    experiment_id = _experiment(mlflow_server.url, "otel-times")
    recording = RecordingSink()
    _run_agent(_sink(mlflow_server, experiment_id), recording, fail=True)
    (trace,) = _traces(mlflow_server.url, experiment_id, 1)
    assert trace.info.state.value == "ERROR"
    spans = list(trace.data.spans)
    (root,) = [s for s in spans if s.parent_id is None]
    assert root.status.status_code.value == "ERROR"
    assert "nan loss" in root.status.description
    start = recording.of_type(RunStart)[0]
    times = [start.time_ns] + [s.time_ns for s in recording.of_type(Step)]
    for k in range(3):
        (step,) = [s for s in spans if s.name == f"step {k}"]
        assert (step.start_time_ns, step.end_time_ns) == (times[k], times[k + 1])
    recorded = sorted((e.start_ns, e.end_ns) for e in recording.of_type(Span))
    exported = sorted((s.start_time_ns, s.end_time_ns) for s in spans
                      if s.name.startswith("actor."))
    assert exported == recorded


def test_unreachable_endpoint_leaves_the_run_alone(runs_dir: Path) -> None:
    """With nothing listening, the run and the JSONL sink finish and status says why."""
    sink = OtelSink(f"http://127.0.0.1:{free_port()}/v1/traces", export_timeout_s=0.3,
                    retry_s=1)
    with rlobs.Hub(["jsonl", sink], heartbeat_s=0, provenance=False) as hub:
        with hub.run("offline") as run:
            for _ in range(50):
                with run.span("actor.forward"):
                    pass
                run.step(1.0)
        assert hub.flush(60)  # the shipper gave up on the spans, and says so
        status = {s.name: s for s in hub.status()}
    assert run.result is not None and run.result.completed
    log = rlobs.read_run(runs_dir / f"{run.run_id}.jsonl")
    assert len(log.steps) == 50 and log.end is not None
    otel = status["otel"]
    assert otel.available and otel.errors == 0 and otel.dropped > 0
    assert otel.detail is not None and "export failing" in otel.detail
    assert "cannot connect to 127.0.0.1" in otel.detail, otel.detail
    record = deliveries(runs_dir, run.run_id)["otel"]
    assert record["state"] == "incomplete" and record["lost"] > 0
