"""OpenTelemetry sink: what a span costs on the sink's worker, and what the agent pays.

Two tables, each against a baseline measured in the same process, trials interleaved,
medians reported (absolute numbers move ±20-30 % on a shared machine; ratios hold):

1. Worker cost per span: the sink's hooks fed directly (step + span events → SDK spans,
   attributes included) vs a bare OpenTelemetry SDK span on a tracer of the same kind
   (BatchSpanProcessor, exporter that discards), with and without the same attributes.
2. Caller cost per step (``run.span`` + ``run.step``): hub with the OTel sink vs a hub
   whose only sink does nothing, vs building the same two SDK spans inline on the
   agent's thread (what the sink avoids). The sink's worker shares the GIL with the agent,
   so the more spans it builds per second, the more the agent's loop waits for the GIL;
   default sampling (a span for each of the first 1000 steps, then every 100th) is shown
   beside a span for every step.

Run::

    PYTHONPATH=. python benchmarks/bench_otel.py [--steps 20000] [--trials 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Tracer
from opentelemetry.util.types import AttributeValue

import rlobs
from rlobs import RunEnd, RunStart, RunStatus, Span, Step
from sinks.otel import OtelSink, StepSampling


class Discard(SpanExporter):
    """Takes spans and throws them away (the network is not what is measured)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class NullSink(rlobs.Sink):
    """Receives every event and does nothing."""

    name = "null"


def _tracer() -> tuple[TracerProvider, Tracer]:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=1 << 16))
    return provider, provider.get_tracer("bench")


def sink_worker_per_span(steps: int) -> float:
    """µs per span built by the sink's hooks (one step span + one actor span per step)."""
    sink = OtelSink(exporter=Discard(), sampling=StepSampling(first=steps, every=1))
    sink.open()
    sink.on_run_start(RunStart("r", "bench", {"lr": 0.001}, {}, None, 0))
    t0 = time.perf_counter_ns()
    for k in range(steps):
        base = 1_000 + k * 1_000
        sink.on_span(Span("r", "actor.forward", k, base, base + 500, {"batch": 1}, k + 1,
                          None, None))
        sink.on_step(Step("r", k, 1.0, float(k), {"loss": 0.5}, False, False, 0, None, None,
                          base + 900))
    elapsed = time.perf_counter_ns() - t0
    sink.on_run_end(RunEnd("r", RunStatus.FINISHED, steps, 0.0, 0, 0.0, None, {}, 0,
                           steps * 1_000 + 2_000))
    sink.close()
    return elapsed / (2 * steps) / 1000


def bare_sdk_per_span(steps: int, with_attributes: bool) -> float:
    """µs per bare SDK span (start_span + end), optionally with the sink's attributes."""
    provider, tracer = _tracer()
    full: dict[str, AttributeValue] = {
        "openinference.span.kind": "CHAIN", "rlobs.step": 1, "rlobs.reward": 1.0,
        "rlobs.cumulative_reward": 2.0, "rlobs.episode": 0, "rlobs.done": False,
        "rlobs.truncated": False, "rlobs.metric.loss": 0.5}
    attrs = full if with_attributes else None
    ctx = Context()
    t0 = time.perf_counter_ns()
    for k in range(2 * steps):
        span = tracer.start_span("step", context=ctx, attributes=attrs, start_time=k)
        span.end(end_time=k + 1)
    elapsed = time.perf_counter_ns() - t0
    provider.shutdown()
    return elapsed / (2 * steps) / 1000


def caller_per_step(steps: int, sink: rlobs.Sink | None) -> float:
    """µs per step on the agent's thread: one ``run.span`` and one ``run.step``."""
    sinks = [sink] if sink is not None else [NullSink()]
    # A generous end timeout: the next trial must not start beside a worker still busy.
    with rlobs.Hub(sinks, heartbeat_s=0, provenance=False, handle_signals=False,
                   end_timeout_s=120) as hub, \
            hub.run("bench") as run:
        t0 = time.perf_counter_ns()
        for _ in range(steps):
            with run.span("actor.forward"):
                pass
            run.step(1.0, {"loss": 0.5})
        elapsed = time.perf_counter_ns() - t0
    return elapsed / steps / 1000


def inline_sdk_per_step(steps: int) -> float:
    """µs per step when the agent's thread builds the two SDK spans itself."""
    provider, tracer = _tracer()
    with tracer.start_as_current_span("run"):
        t0 = time.perf_counter_ns()
        for k in range(steps):
            with tracer.start_as_current_span("step", attributes={"rlobs.step": k}), \
                    tracer.start_as_current_span("actor.forward"):
                pass
        elapsed = time.perf_counter_ns() - t0
    provider.shutdown()
    return elapsed / steps / 1000


def _table(title: str, rows: dict[str, list[float]], baseline: str) -> None:
    base = statistics.median(rows[baseline])
    print(f"\n{title}\n")
    print("| case | median µs | vs baseline |")
    print("|---|---:|---:|")
    for name, values in rows.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.2f} | {med / base:.2f}x |")


def _trials(cases: dict[str, Callable[[], float]], trials: int) -> dict[str, list[float]]:
    rows: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(trials):
        for name, case in cases.items():  # interleaved: drift hits every case alike
            rows[name].append(case())
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args(argv)
    n = args.steps
    worker = _trials({
        "bare SDK span, no attributes (baseline)": lambda: bare_sdk_per_span(n, False),
        "bare SDK span, 8 attributes, explicit times": lambda: bare_sdk_per_span(n, True),
        "OTel sink hooks, per span built": lambda: sink_worker_per_span(n),
    }, args.trials)
    _table(f"Worker cost per span ({n} steps × 2 spans, {args.trials} trials)", worker,
           "bare SDK span, no attributes (baseline)")
    caller = _trials({
        "hub, null sink (baseline)": lambda: caller_per_step(n, None),
        "hub, OTel sink (default sampling)": lambda: caller_per_step(
            n, OtelSink(exporter=Discard())),
        "hub, OTel sink, a span for every step": lambda: caller_per_step(
            n, OtelSink(exporter=Discard(), sampling=StepSampling(first=n))),
        "SDK spans built inline on the caller": lambda: inline_sdk_per_step(n),
    }, args.trials)
    _table(f"Caller cost per step: run.span + run.step ({n} steps, {args.trials} trials)",
           caller, "hub, null sink (baseline)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
