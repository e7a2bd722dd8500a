"""Live runs: each window of steps after the first is a whole trace sent while the run
runs, rooted in a span linked to the run span; errors land in the step they happened in."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from otlp_receiver import OtlpReceiver, ReceivedSpan

import rlobs
from rlobs import TraceIds
from sinks.otel import OtelSink, StepSampling


def _wait(predicate: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)


def _of_trace(spans: list[ReceivedSpan], trace_id: int) -> list[ReceivedSpan]:
    return [s for s in spans if s.trace_id == trace_id]


@pytest.mark.slow
def test_a_running_run_shows_whole_windows(receiver: OtlpReceiver, runs_dir: Path) -> None:
    """With 10-step windows, window 1 arrives whole while the run runs (root, steps,
    spans; root linked to the run span); the run's own trace and the last window at
    its end."""
    sink = OtelSink(receiver.url, window_steps=10)
    with rlobs.Hub(["jsonl", sink], heartbeat_s=0, provenance=False) as hub, \
            hub.run("live") as run:
        ids = run.trace_ids
        for k in range(35):
            with run.span("actor.forward"):
                pass
            run.step(1.0)
            if k == 25:
                _wait(lambda: len(_of_trace(receiver.spans, ids.trace_of(1))) >= 21)
                mid = list(receiver.spans)
    window = _of_trace(mid, ids.trace_of(1))
    (root,) = [s for s in window if s.parent_id is None]
    assert root.span_id == ids.window_span(1) and root.name == "invoke_agent live steps 10-19"
    assert root.links == [(ids.trace_id, ids.run_span)]
    assert sorted(s.name for s in window if s.parent_id == root.span_id) == \
        sorted(f"step {k}" for k in range(10, 20))
    assert len(window) == 21  # root, 10 steps, 10 spans: whole
    assert not _of_trace(mid, ids.trace_id)  # the run's trace waits for its end
    spans = receiver.wait_for(1 + 35 + 35 + 3)
    assert len(_of_trace(spans, ids.trace_id)) == 1 + 10 + 10
    last = [s for s in _of_trace(spans, ids.trace_of(3)) if s.parent_id is None]
    assert [s.name for s in last] == ["invoke_agent live steps 30-34"]
    starts = sorted((s.start_ns, s.end_ns) for s in spans if s.links)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(starts))


def _in_memory(window_steps: int, **kwargs: object) -> tuple[rlobs.Hub, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    sink = OtelSink(exporter=exporter, window_steps=window_steps, **kwargs)  # type: ignore[arg-type]
    return rlobs.Hub([sink], heartbeat_s=0, provenance=False), exporter


def test_an_error_lands_in_the_step_it_happened_in() -> None:
    """A run failing during step 15 gets an unfinished step 15 marked ERROR, in its
    window's trace, and the window root and run span are ERROR too."""
    hub, exporter = _in_memory(10)
    with hub, pytest.raises(RuntimeError), hub.run("crash") as run:
        for k in range(20):
            if k == 15:
                with run.span("learner.update"):
                    raise RuntimeError("nan loss")
            run.step(0.0)
    hub.close()
    ids = run.trace_ids
    spans = {s.name: s for s in exporter.get_finished_spans()}
    step = spans["step 15"]
    assert step.status.status_code is StatusCode.ERROR and "nan loss" in str(
        step.status.description)
    assert step.context.trace_id == ids.trace_of(1)
    assert spans["learner.update"].parent.span_id == ids.step(15)  # type: ignore[union-attr]
    assert spans["learner.update"].status.status_code is StatusCode.ERROR
    assert spans["invoke_agent crash steps 10-14"].status.status_code is StatusCode.ERROR
    assert spans["invoke_agent crash"].status.status_code is StatusCode.ERROR


def test_long_run_is_bounded_and_covers_its_timeline() -> None:
    """5000 steps: kept step spans stay bounded by the sampling, while window roots
    cover the whole run end to end."""
    hub, exporter = _in_memory(100, sampling=StepSampling(first=200, every=500))
    with hub, hub.run("long") as run:
        for _ in range(5000):
            run.step(1.0)
    hub.close()
    spans = list(exporter.get_finished_spans())
    steps = [s for s in spans if s.name.startswith("step ")]
    roots = sorted((s for s in spans if s.links), key=lambda s: s.start_time or 0)
    assert len(steps) == 200 + 10 - 1  # 0..199, then 500, 1000, ..., 4500 (0 counted)
    assert len(roots) == 49  # windows 1..49; window 0 is the run's own trace
    run_span = next(s for s in spans if s.name == "invoke_agent long")
    step_99 = next(s for s in steps if s.name == "step 99")
    assert roots[0].start_time == step_99.end_time
    assert all(a.end_time == b.start_time for a, b in itertools.pairwise(roots))
    assert dict(roots[-1].attributes or {})["rlobs.last_step"] == 4999
    assert (roots[-1].end_time or 0) <= (run_span.end_time or 0)


def test_otel_context_follows_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party span made in step 12 with 10-step windows joins window 1's trace,
    under step 12's span."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    monkeypatch.setenv("RLOBS_OTEL_TRACE_STEPS", "10")
    user = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(user))
    hub, exporter = _in_memory(10)
    with hub, hub.run("ctx") as run, rlobs.use_otel_context(run):
        for k in range(15):
            if k == 12:
                provider.get_tracer("client").start_span("http.get").end()
            run.step(0.0)
    hub.close()
    provider.shutdown()
    (span,) = user.get_finished_spans()
    ids: TraceIds = run.trace_ids
    assert span.context.trace_id == ids.trace_of(1)
    assert span.parent is not None and span.parent.span_id == ids.step(12)
    step = next(s for s in exporter.get_finished_spans() if s.name == "step 12")
    assert (step.context.trace_id, step.context.span_id) == (ids.trace_of(1), ids.step(12))


def test_over_the_pending_limit_spans_keep_their_parents() -> None:
    """With room to hold 3 spans, a turn of 10 calls is sent early, parents unchanged."""
    exporter = InMemorySpanExporter()
    sink = OtelSink(exporter=exporter, env={"RLOBS_OTEL_MAX_PENDING_SPANS": "3"})
    with rlobs.Hub([sink], heartbeat_s=0, provenance=False) as hub, hub.run("busy") as run:
        with run.span("turn") as turn:
            for _ in range(10):
                with run.span("call"):
                    pass
        run.step(0.0)
    hub.close()
    (status,) = hub.status()
    detail = status.detail
    ids = run.trace_ids
    spans = list(exporter.get_finished_spans())
    calls = [s for s in spans if s.name == "call"]
    assert len(calls) == 10
    assert all(s.parent is not None and s.parent.span_id == ids.span(turn.span_id)
               for s in calls)
    assert detail is not None and "over the pending limit" in detail


def test_a_child_run_stays_whole_in_its_parents_trace() -> None:
    """Windows are for root runs: a 25-step child of a 10-step-window hub is one tree in
    its parent's trace."""
    hub, exporter = _in_memory(10)
    with hub, hub.run("sweep") as parent, hub.run("cell", parent=parent) as child:
        for _ in range(25):
            child.step(1.0)
    hub.close()
    spans = list(exporter.get_finished_spans())
    assert {s.context.trace_id for s in spans} == {parent.trace_ids.trace_id}
    assert not [s for s in spans if s.links]
    assert child.window_steps == 0
