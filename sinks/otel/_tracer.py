"""Builds OpenTelemetry spans from rlobs events, on the sink's worker thread.

Imported only once the sink opens (it imports the OpenTelemetry SDK). Every span is built
from the events' recorded timestamps, so building it late changes nothing it shows:

- the run span starts at ``RunStart.time_ns`` and stays open (this is the only span kept
  in memory) until ``RunEnd.time_ns``;
- step ``k``'s span runs from step ``k-1``'s ``time_ns`` (step 0: the run's start) to its
  own, the time the agent spent producing that step;
- a ``Span`` event becomes a child of its step (``Span.step == k``) with its own start and
  end; it arrives before its step, so it waits (bounded) until the step does. Nested spans
  keep their parent when it belongs to the same step, otherwise they hang off the step.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Status, StatusCode

from rlobs import Artifact, RunEnd, RunStart, RunStatus, RunUpdate, Span, Step

from . import _attributes as attributes
from ._metrics import RunMetrics
from ._sampling import StepSampling

_ENDED = 4096
"""Ended runs whose span a child that starts later still nests under."""
_RECENT = 8
"""Step contexts remembered for spans that arrive just after their step (another thread)."""


class _RunTrace:
    """One open run: its span and what its steps still need."""

    __slots__ = ("attrs_dropped", "attrs_used", "ctx", "family", "last_ns", "next_step",
                 "pending", "pending_count", "recent", "root", "skipped_spans", "skipped_steps",
                 "start")

    def __init__(self, start: RunStart, root: trace.Span, attrs_used: int,
                 attrs_dropped: int) -> None:
        self.start = start
        self.family = attributes.family(start.name)
        self.root = root
        self.ctx = trace.set_span_in_context(root, Context())
        self.last_ns = start.time_ns
        self.next_step = 0
        self.pending: dict[int, list[Span]] = {}
        self.pending_count = 0
        self.recent: OrderedDict[int, Context] = OrderedDict()
        self.skipped_steps = 0
        self.skipped_spans = 0
        self.attrs_used = attrs_used
        self.attrs_dropped = attrs_dropped


class RunTracer:
    """Turns one sink's events into spans on ``tracer`` (see module docstring).

    Args:
        tracer: the sink's own tracer.
        sampling: which steps get a span.
        attribute_limit: attributes per span (OpenTelemetry's count limit).
        max_length: longest string attribute value.
        max_open_runs: runs traced at once; later ones are counted, not traced.
        max_pending_spans: spans one run may hold while waiting for their step.
        metrics: instruments to record every step and span on, sampled or not.
    """

    def __init__(self, tracer: trace.Tracer, sampling: StepSampling, *,
                 attribute_limit: int, max_length: int, max_open_runs: int,
                 max_pending_spans: int, metrics: RunMetrics | None = None) -> None:
        self._tracer = tracer
        self._sampling = sampling
        self._limit = attribute_limit
        self._max_len = max_length
        self._max_runs = max_open_runs
        self._max_pending = max_pending_spans
        self._runs: dict[str, _RunTrace] = {}
        self._ended: OrderedDict[str, Context] = OrderedDict()  # for late children
        self._metrics = metrics
        self.untraced_runs = 0
        self.dropped_spans = 0
        self.spans_built = 0

    @property
    def open_runs(self) -> int:
        """Runs whose span is open."""
        return len(self._runs)

    def start(self, event: RunStart) -> None:
        """Open the run's span, a child of its parent run's span when this sink saw the
        parent start (the parent may have ended already: logs are shipped one by one)."""
        if len(self._runs) >= self._max_runs:
            self.untraced_runs += 1
            return
        parent = self._runs.get(event.parent_id or "")
        context = parent.ctx if parent else self._ended.get(event.parent_id or "", Context())
        attrs, dropped = attributes.run_attributes(event, self._limit, self._max_len)
        root = self._tracer.start_span(
            attributes.run_name(event), context=context, attributes=attrs,
            start_time=event.time_ns)
        self._runs[event.run_id] = _RunTrace(event, root, len(attrs), dropped)

    def step(self, event: Step) -> None:
        """Emit the step's span (if sampled) and its waiting spans."""
        run = self._runs.get(event.run_id)
        if run is None:
            return
        if self._metrics is not None:
            self._metrics.step(event, run.family)
        start_ns, run.last_ns = run.last_ns, event.time_ns
        run.next_step = event.step + 1
        self._release_orphans(run, event.step)
        spans = run.pending.pop(event.step, [])
        run.pending_count -= len(spans)
        if not self._sampling.keep(event.step):
            run.skipped_steps += 1
            run.skipped_spans += len(spans)
            return
        ctx = self._emit(attributes.step_name(event), run.ctx, start_ns, event.time_ns,
                         attributes.step_attributes(event, self._limit, self._max_len))
        run.recent[event.step] = ctx
        if len(run.recent) > _RECENT:
            run.recent.popitem(last=False)
        self._emit_spans(spans, ctx)

    def span(self, event: Span) -> None:
        """Hold the span until its step arrives (or emit it now if the step came first)."""
        run = self._runs.get(event.run_id)
        if run is None:
            return
        if self._metrics is not None:
            self._metrics.span(event, run.family)
        if event.step < run.next_step:  # its step came first (recorded on another thread)
            ctx = run.recent.get(event.step)
            if ctx is None:
                run.skipped_spans += 1  # the step was not sampled, or is long gone
            else:
                self._emit_spans([event], ctx)
        elif run.pending_count >= self._max_pending:
            self.dropped_spans += 1
        else:
            run.pending.setdefault(event.step, []).append(event)
            run.pending_count += 1

    def update(self, event: RunUpdate) -> None:
        """Add params, tags and summary metrics to the open run span (within budget)."""
        run = self._runs.get(event.run_id)
        if run is None:
            return
        items = attributes.update_attributes(event.params, event.tags, event.metrics)
        budget = self._limit - attributes.END_RESERVE
        for key, value in items:
            clean = attributes.coerce(value, self._max_len)
            if clean is None:
                continue
            if run.attrs_used >= budget:
                run.attrs_dropped += 1
                continue
            run.root.set_attribute(key, clean)
            run.attrs_used += 1

    def artifact(self, event: Artifact) -> None:
        """Note an attached file as an event on the run span."""
        run = self._runs.get(event.run_id)
        if run is not None:
            run.root.add_event("rlobs.artifact", {"path": event.path,
                                                  "artifact_path": event.artifact_path or ""},
                               timestamp=event.time_ns)

    def end(self, event: RunEnd) -> None:
        """Emit spans still waiting (under the run span) and end the run span."""
        run = self._runs.pop(event.run_id, None)
        if run is None:
            return
        for step in sorted(run.pending):
            self._emit_spans(run.pending[step], run.ctx)
        root = run.root
        root.set_attributes(attributes.end_attributes(
            event, run.skipped_steps, run.skipped_spans, run.attrs_dropped))
        if event.status is RunStatus.FINISHED:
            root.set_status(Status(StatusCode.OK))
        else:
            error = event.error or event.status.value
            root.set_status(Status(StatusCode.ERROR, f"{event.status.value}: {error}"))
            root.add_event("exception", attributes.error_event(error), timestamp=event.time_ns)
        root.end(end_time=max(event.time_ns, run.start.time_ns))
        self.spans_built += 1
        self._ended[event.run_id] = run.ctx
        if len(self._ended) > _ENDED:
            self._ended.popitem(last=False)

    def _release_orphans(self, run: _RunTrace, step: int) -> None:
        # Spans of a step that never arrived (dropped by a full queue) go under the run.
        for index in [k for k in run.pending if k < step]:
            spans = run.pending.pop(index)
            run.pending_count -= len(spans)
            self._emit_spans(spans, run.ctx)

    def _emit_spans(self, spans: list[Span], step_ctx: Context) -> None:
        contexts: dict[int, Context] = {}
        # Parents start before their children, so they exist when a child needs them.
        for event in sorted(spans, key=lambda s: (s.start_ns, -s.end_ns)):
            parent = contexts.get(event.parent_span_id or 0, step_ctx)
            contexts[event.span_id] = self._emit(
                attributes.span_name(event), parent, event.start_ns, event.end_ns,
                attributes.span_attributes(event, self._limit, self._max_len), event.error)

    def _emit(self, name: str, parent: Context, start_ns: int, end_ns: int,
              attrs: Mapping[str, Any], error: str | None = None) -> Context:
        span = self._tracer.start_span(name, context=parent, attributes=attrs,
                                       start_time=start_ns)
        if error:
            span.set_status(Status(StatusCode.ERROR, error))
            span.add_event("exception", attributes.error_event(error), timestamp=end_ns)
        span.end(end_time=max(start_ns, end_ns))
        self.spans_built += 1
        return trace.set_span_in_context(span, Context())

    def end_all(self, error: str) -> None:
        """End every open run span as killed (the sink is closing)."""
        for run_id in list(self._runs):
            self.end(RunEnd(run_id, RunStatus.KILLED, 0, 0.0, 0, 0.0, error, {}, 0,
                            time.time_ns()))
