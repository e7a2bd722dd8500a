"""OpenTelemetry sink, in memory: the span tree, times and attributes it builds."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import rlobs
from rlobs import ConfigError, RunStart, RunStatus, Span, Step
from rlobs.testing import RecordingSink
from sinks.otel import OtelSink, StepSampling


class Traced:
    """A hub with the OTel sink on an in-memory exporter, plus a recording sink."""

    def __init__(self, **sink_args: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.sink = OtelSink(exporter=self.exporter, **sink_args)
        self.recording = RecordingSink()
        self.hub = rlobs.Hub([self.sink, self.recording], heartbeat_s=0, provenance=False)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> ReadableSpan:
        (span,) = [s for s in self.spans() if s.name == name]
        return span


@pytest.fixture
def traced() -> Iterator[Traced]:
    t = Traced()
    yield t
    t.hub.close()


def _play(traced: Traced, steps: int = 3) -> None:
    with traced.hub.run("cartpole-sac", params={"lr": 0.001, "net": {"width": 256}}) as run:
        for i in range(steps):
            with run.span("actor.forward", batch=1), run.span("actor.mlp"):
                time.sleep(0.001)
            run.step(0.5, {"loss": 0.25}, done=i == steps - 1)
    traced.hub.close()


def test_run_span_attributes(traced: Traced) -> None:
    """The run span is a GenAI invoke_agent / OpenInference AGENT span with RL totals."""
    _play(traced)
    root = traced.named("invoke_agent cartpole-sac")
    attrs = dict(root.attributes or {})
    assert root.parent is None
    assert root.status.status_code is StatusCode.OK
    assert attrs["gen_ai.operation.name"] == "invoke_agent"
    assert attrs["gen_ai.agent.name"] == "cartpole-sac"
    assert attrs["openinference.span.kind"] == "AGENT"
    assert attrs["rlobs.param.lr"] == 0.001
    assert attrs["rlobs.param.net.width"] == 256
    assert attrs["rlobs.status"] == "finished"
    assert attrs["rlobs.steps"] == 3
    assert attrs["rlobs.total_reward"] == 1.5
    assert attrs["rlobs.episodes"] == 1


def test_step_span_runs_from_previous_step(traced: Traced) -> None:
    """Step k's span starts at step k-1's time (step 0: the run's start) and ends at k's."""
    _play(traced)
    start = traced.recording.of_type(RunStart)[0]
    times = [start.time_ns] + [s.time_ns for s in traced.recording.of_type(Step)]
    for k in range(3):
        span = traced.named(f"step {k}")
        assert (span.start_time, span.end_time) == (times[k], times[k + 1])
        assert span.parent is not None
        assert span.parent.span_id == traced.named("invoke_agent cartpole-sac").context.span_id


def test_step_span_attributes(traced: Traced) -> None:
    """Step spans carry the RL fields under ``rlobs.`` and are OpenInference CHAIN spans."""
    _play(traced)
    attrs = dict(traced.named("step 2").attributes or {})
    assert attrs == {
        "openinference.span.kind": "CHAIN", "rlobs.step": 2, "rlobs.reward": 0.5,
        "rlobs.cumulative_reward": 1.5, "rlobs.episode": 0, "rlobs.done": True,
        "rlobs.truncated": False, "rlobs.episode_return": 1.5, "rlobs.episode_length": 3,
        "rlobs.metric.loss": 0.25,
    }


def test_spans_are_grandchildren_with_recorded_times(traced: Traced) -> None:
    """Span events hang under their step, nested ones under their parent, times unchanged."""
    _play(traced)
    recorded = {(s.name, s.step): s for s in traced.recording.of_type(Span)}
    steps = {s.name: s for s in traced.spans() if s.name.startswith("step ")}
    for k in range(3):
        step = steps[f"step {k}"]
        forward = [s for s in traced.spans() if s.name == "actor.forward"
                   and s.parent is not None and s.parent.span_id == step.context.span_id]
        assert len(forward) == 1
        (mlp,) = [s for s in traced.spans() if s.name == "actor.mlp"
                  and s.parent is not None and s.parent.span_id == forward[0].context.span_id]
        event = recorded[("actor.mlp", k)]
        assert (mlp.start_time, mlp.end_time) == (event.start_ns, event.end_ns)
        assert dict(forward[0].attributes or {})["batch"] == 1


def test_tool_span_is_execute_tool(traced: Traced) -> None:
    """A span with a ``tool`` attribute becomes a GenAI execute_tool / OpenInference TOOL span."""
    with traced.hub.run("agent") as run:
        with run.span("call", tool="web_search", query="cartpole"):
            pass
        run.step(0.0)
    traced.hub.close()
    attrs = dict(traced.named("execute_tool web_search").attributes or {})
    assert attrs["gen_ai.operation.name"] == "execute_tool"
    assert attrs["gen_ai.tool.name"] == "web_search"
    assert attrs["openinference.span.kind"] == "TOOL"
    assert attrs["query"] == "cartpole"
    assert "tool" not in attrs


def test_failed_run_is_an_error_with_the_exception(traced: Traced) -> None:
    """A failed run's span ends ERROR and records the exception as an event."""
    with pytest.raises(ValueError), traced.hub.run("crashy") as run:
        run.step(1.0)
        raise ValueError("diverged")
    traced.hub.close()
    root = traced.named("invoke_agent crashy")
    assert root.status.status_code is StatusCode.ERROR
    assert root.status.description == "failed: ValueError: diverged"
    (event,) = [e for e in root.events if e.name == "exception"]
    assert dict(event.attributes or {}) == {"exception.type": "ValueError",
                                            "exception.message": "diverged"}


def test_span_error_marks_the_span(traced: Traced) -> None:
    """A span that raised ends ERROR with its exception recorded."""
    with traced.hub.run("agent") as run:
        with pytest.raises(KeyError), run.span("env.step"):
            raise KeyError("x")
        run.step(0.0)
    traced.hub.close()
    span = traced.named("env.step")
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


def test_nested_run_joins_the_parent_trace(traced: Traced) -> None:
    """A child run's span is a child of its parent run's span, in the parent's trace."""
    with traced.hub.run("sweep") as parent:
        with traced.hub.run("sweep-cell", parent=parent) as child:
            child.step(1.0)
        parent.step(0.0)
    traced.hub.close()
    outer = traced.named("invoke_agent sweep")
    inner = traced.named("invoke_agent sweep-cell")
    assert inner.context.trace_id == outer.context.trace_id == child.trace_ids.trace_id
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id
    assert dict(inner.attributes or {})["rlobs.parent_run_id"] == parent.run_id


def test_sampling_keeps_first_steps_then_every_kth() -> None:
    """Past ``first`` steps only every k-th step gets a span; the rest are counted."""
    traced = Traced(sampling=StepSampling(first=3, every=5))
    with traced.hub.run("long") as run:
        for _ in range(12):
            with run.span("actor.forward"):
                pass
            run.step(1.0)
    traced.hub.close()
    names = sorted(s.name for s in traced.spans() if s.name.startswith("step "))
    assert names == ["step 0", "step 1", "step 10", "step 2", "step 5"]
    root = dict(traced.named("invoke_agent long").attributes or {})
    assert (root["rlobs.steps_skipped"], root["rlobs.spans_skipped"]) == (7, 7)
    assert len([s for s in traced.spans() if s.name == "actor.forward"]) == 5


def test_sampling_of_vector_records_counts_their_env_steps() -> None:
    """Records of 4 env steps (SB3's timestep axis) are sampled by the indices they stand
    for, and the spans recorded before each one are filed under its step span."""
    traced = Traced(sampling=StepSampling(first=3, every=8))
    with traced.hub.run("vector") as run:
        for _ in range(6):
            with run.span("actor.forward"):
                pass
            run.step(1.0, env_steps=4)
    traced.hub.close()
    steps = {s.name: s for s in traced.spans() if s.name.startswith("step ")}
    assert sorted(steps) == ["step 11", "step 19", "step 3"]  # 0-3, 8-11, 16-19
    forwards = [s for s in traced.spans() if s.name == "actor.forward"]
    assert len(forwards) == 3
    assert {f.parent.span_id for f in forwards if f.parent} == {
        s.context.span_id for s in steps.values()}


def test_sampling_reads_its_variables() -> None:
    """``RLOBS_OTEL_STEP_SPANS``/``RLOBS_OTEL_STEP_EVERY`` set the sampling."""
    sink = OtelSink.from_env({"RLOBS_OTEL_STEP_SPANS": "10", "RLOBS_OTEL_STEP_EVERY": "0"})
    assert sink.sampling == StepSampling(first=10, every=0)
    assert not sink.sampling.keep(10)


def test_spans_after_the_last_step_hang_off_the_run(traced: Traced) -> None:
    """Spans recorded after the last step (no step follows) end up under the run span."""
    with traced.hub.run("tail") as run:
        run.step(1.0)
        with run.span("evaluate"):
            pass
    traced.hub.close()
    root = traced.named("invoke_agent tail")
    evaluate = traced.named("evaluate")
    assert evaluate.parent is not None and evaluate.parent.span_id == root.context.span_id


def test_span_arriving_after_its_step_still_nests() -> None:
    """A span delivered just after its step (another thread) still goes under that step."""
    exporter = InMemorySpanExporter()
    sink = OtelSink(exporter=exporter)
    sink.open()
    sink.on_run_start(RunStart("r1", "late", {}, {}, None, 1_000))
    sink.on_step(Step("r1", 0, 1.0, 1.0, {}, False, False, 0, None, None, 5_000))
    sink.on_span(Span("r1", "actor.forward", 0, 2_000, 3_000, {}, 1, None, None))
    sink.on_run_end(rlobs.RunEnd("r1", RunStatus.FINISHED, 1, 1.0, 0, 0.0, None, {}, 0, 6_000))
    sink.close()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    parent = spans["actor.forward"].parent
    assert parent is not None and parent.span_id == spans["step 0"].context.span_id


def test_many_params_keep_the_convention_attributes(traced: Traced) -> None:
    """Params beyond the attribute limit are cut, not the GenAI/OpenInference keys."""
    params = {f"p{i:03d}": i for i in range(300)}
    with traced.hub.run("wide", params=params) as run:
        run.step(1.0)
    traced.hub.close()
    attrs = dict(traced.named("invoke_agent wide").attributes or {})
    assert len(attrs) <= 128
    assert attrs["gen_ai.operation.name"] == "invoke_agent"
    assert attrs["rlobs.status"] == "finished"
    assert attrs["rlobs.attributes_dropped"] == 300 - sum(k.startswith("rlobs.param.")
                                                          for k in attrs)


def test_explicit_arguments_beat_the_environment() -> None:
    """Constructor endpoint/headers win over OTEL_* variables; the base URL gets /v1/traces."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
           "OTEL_EXPORTER_OTLP_HEADERS": "a=1,b=2", "OTEL_SERVICE_NAME": "trainer"}
    from_env = OtelSink.from_env(env)
    assert from_env.endpoint == "http://collector:4318/v1/traces"
    assert from_env.service_name == "trainer"
    explicit = OtelSink("http://other:4318/v1/traces", headers={"b": "3"}, env=env)
    assert explicit.endpoint == "http://other:4318/v1/traces"
    assert explicit.headers == {"b": "3"}
    traces = OtelSink.from_env({**env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x"})
    assert traces.endpoint == "http://t/x"


def test_selected_by_default_when_an_endpoint_is_set() -> None:
    """Either endpoint variable turns the sink on; OTEL_SDK_DISABLED turns it off."""
    assert not OtelSink.selected_by_default({})
    assert OtelSink.selected_by_default({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert OtelSink.selected_by_default({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c/x"})
    assert not OtelSink.selected_by_default({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                                             "OTEL_SDK_DISABLED": "true"})


def test_unknown_protocol_is_a_config_error() -> None:
    """An OTLP protocol the sink does not speak fails fast with ConfigError."""
    with pytest.raises(ConfigError, match="http/json"):
        OtelSink.from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_sdk_disabled_makes_the_sink_unavailable() -> None:
    """With OTEL_SDK_DISABLED=true the sink reports why and the run goes on."""
    sink = OtelSink.from_env({"OTEL_SDK_DISABLED": "true"})
    with rlobs.Hub([sink], heartbeat_s=0, provenance=False) as hub:
        with hub.run("off") as run:
            run.step(1.0)
        (status,) = hub.status()
    assert not status.available
    assert status.detail is not None and "OTEL_SDK_DISABLED" in status.detail
    assert run.result is not None and run.result.completed


def test_loading_the_sink_does_not_import_opentelemetry() -> None:
    """``import rlobs`` and loading the sink class leave opentelemetry unimported."""
    code = ("import sys, rlobs, sinks.otel; "
            "print(any(m.startswith('opentelemetry') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_metrics_count_steps_without_run_ids() -> None:
    """With metrics on, steps/rewards/span durations are recorded, labelled by run family."""
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    traced = Traced(metric_reader=reader)
    with traced.hub.run("cartpole-seed1") as run:
        for _ in range(3):
            with run.span("actor.forward"):
                pass
            run.step(0.5)
    traced.hub.flush()
    data = reader.get_metrics_data()
    traced.hub.close()
    assert data is not None
    metrics = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics
               for m in sm.metrics}
    (steps,) = metrics["rlobs.steps"].data.data_points
    assert steps.value == 3
    assert dict(steps.attributes or {}) == {"rlobs.run_family": "cartpole"}
    (reward,) = metrics["rlobs.reward"].data.data_points
    assert (reward.count, reward.sum) == (3, 1.5)
    (latency,) = metrics["rlobs.span.duration"].data.data_points
    assert dict(latency.attributes or {}) == {"rlobs.run_family": "cartpole",
                                              "rlobs.span.name": "actor.forward"}


def test_sync_rebuilds_the_trace_with_recorded_times(runs_dir: Path) -> None:
    """Syncing a JSONL log to the sink gives spans with the log's times, not the sync's."""
    with rlobs.Hub(["jsonl"], heartbeat_s=0, provenance=False) as hub, \
            hub.run("recorded") as run:
        for _ in range(2):
            with run.span("actor.forward"):
                pass
            run.step(1.0)
    log = rlobs.read_run(runs_dir / f"{run.run_id}.jsonl")
    traced = Traced()
    assert rlobs.sync([log.path], [traced.sink]).complete
    assert traced.named("step 1").end_time == log.steps[1].time_ns
    assert traced.named("invoke_agent recorded").start_time == log.start.time_ns
    assert sorted(s.start_time for s in traced.spans() if s.name == "actor.forward") == \
        sorted(s.start_ns for s in log.spans)
