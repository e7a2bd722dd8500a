"""Builds OpenTelemetry spans from rlobs events, on the sink's worker thread.

Imported only once the sink opens (it imports the OpenTelemetry SDK). Every span is built
from the events' recorded timestamps and gets the ids :class:`rlobs.TraceIds` derives from
the run id and the log's span ids, so building it late, or twice (a replay), changes
nothing it shows, and a parent's id is known before the parent is built:

- the run span starts at ``RunStart.time_ns`` and stays open (this is the only span kept
  in memory) until ``RunEnd.time_ns``;
- step ``k``'s span runs from step ``k-1``'s ``time_ns`` (step 0: the run's start) to its
  own, the time the agent spent producing that step;
- a ``Span`` event without a parent becomes a child of its step (``Span.step == k``); it
  arrives before its step, so it waits (bounded) until the step does. A span with a parent
  is the child of that span, whatever step either is filed under; it arrives before its
  parent (a parent ends last) and waits for it, so that a whole tree is kept or skipped
  with the step its top span belongs to.

Live runs: steps ``0 .. W-1`` (``W``: ``window_steps``) belong to the run's own trace, which
a viewer shows once the run span ends; every later window of ``W`` steps is a trace of its
own, rooted in a ``steps a-b`` span that links to the run span and is sent when its last
step arrives, so a running run shows up window by window, each trace whole (its spans are
held until its root is built, within ``max_pending_spans``). ``W = 0``: one trace per run.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceFlags

from rlobs import Artifact, RunEnd, RunStart, RunStatus, RunUpdate, Span, Step, TraceIds

from . import _attributes as attributes
from ._metrics import RunMetrics
from ._sampling import StepSampling

_ENDED = 4096
"""Ended runs whose ids a child run that starts later still nests under."""
_DONE = 4096
"""Built spans per run remembered for children recorded after their parent ended."""
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class FixedIds(IdGenerator):
    """Hands the SDK the ids the tracer chose for the span it starts next (random ones for
    spans started by anything else)."""

    def __init__(self) -> None:
        self._next = threading.local()

    def use(self, trace_id: int, span_id: int) -> None:
        """The ids of the next span started on this thread."""
        self._next.trace_id, self._next.span_id = trace_id, span_id

    def generate_trace_id(self) -> int:
        value = getattr(self._next, "trace_id", None)
        self._next.trace_id = None
        return value if value is not None else random.getrandbits(128) or 1

    def generate_span_id(self) -> int:
        value = getattr(self._next, "span_id", None)
        self._next.span_id = None
        return value if value is not None else random.getrandbits(64) or 1


def _context(trace_id: int, span_id: int) -> Context:
    return trace.set_span_in_context(trace.NonRecordingSpan(SpanContext(
        trace_id, span_id, is_remote=False, trace_flags=_SAMPLED)), Context())


_Built = tuple[str, int, int, int, int, int, Mapping[str, Any], "str | None", "str | None",
               "Sequence[Link]"]
"""What :meth:`RunTracer._build` takes: name, trace, parent, id, start, end, attributes,
description, error, links."""


class _RunTrace:
    """One open run: its span and what its steps still need."""

    __slots__ = ("attrs_dropped", "attrs_used", "done", "family", "held", "ids", "last_ns",
                 "next_step", "parked", "parked_count", "pending", "per", "root", "skipped_spans",
                 "skipped_steps", "start", "waiting", "window_reward", "window_start")

    def __init__(self, start: RunStart, ids: TraceIds, root: trace.Span, attrs_used: int,
                 attrs_dropped: int) -> None:
        self.start = start
        self.ids = ids
        self.family = attributes.family(start.name)
        self.root = root
        self.last_ns = start.time_ns
        self.next_step = 0
        self.pending: dict[int, list[Span]] = {}  # top spans waiting for their step
        self.waiting: dict[int, list[Span]] = {}  # spans waiting for their parent span
        self.done: OrderedDict[int, bool] = OrderedDict()  # built span ids → kept
        self.held = 0  # span events in pending and waiting
        self.per = 0  # steps per live window (0: none)
        self.skipped_steps = 0
        self.skipped_spans = 0
        self.parked: dict[int, list[_Built]] = {}  # window → spans waiting for its root
        self.parked_count = 0
        self.window_start = start.time_ns
        self.window_reward = 0.0
        self.attrs_used = attrs_used
        self.attrs_dropped = attrs_dropped

    def hold(self, table: dict[int, list[Span]], key: int, event: Span) -> None:
        """Keep ``event`` in ``pending`` or ``waiting`` under ``key``."""
        table.setdefault(key, []).append(event)
        self.held += 1

    def take(self, table: dict[int, list[Span]], key: int) -> list[Span]:
        """What ``pending`` or ``waiting`` holds under ``key``, no longer held."""
        events = table.pop(key, [])
        self.held -= len(events)
        return events


class RunTracer:
    """Turns one sink's events into spans on ``tracer`` (see module docstring).

    Args:
        tracer: the sink's own tracer, on a provider whose id generator is ``ids``.
        ids: the provider's id generator.
        sampling: which steps get a span.
        attribute_limit: attributes per span (OpenTelemetry's count limit).
        max_length: longest string attribute value.
        max_open_runs: runs traced at once; later ones are counted, not traced.
        max_pending_spans: spans one run may hold while waiting for their step, their
            parent, or their trace's root.
        window_steps: steps per live trace after the run's first ones (0: one trace).
        metrics: instruments to record every step and span on, sampled or not.
    """

    def __init__(self, tracer: trace.Tracer, ids: FixedIds, sampling: StepSampling, *,
                 attribute_limit: int, max_length: int, max_open_runs: int,
                 max_pending_spans: int, window_steps: int = 0,
                 metrics: RunMetrics | None = None) -> None:
        self._tracer = tracer
        self._steps_per_window = window_steps
        self._ids = ids
        self._sampling = sampling
        self._limit = attribute_limit
        self._max_len = max_length
        self._max_runs = max_open_runs
        self._max_pending = max_pending_spans
        self._runs: dict[str, _RunTrace] = {}
        self._ended: OrderedDict[str, TraceIds] = OrderedDict()  # for late children
        self._metrics = metrics
        self.untraced_runs = 0
        self.dropped_spans = 0

    @property
    def open_runs(self) -> int:
        """Runs whose span is open."""
        return len(self._runs)

    def ids_of(self, run_id: str) -> TraceIds | None:
        """The ids of a run this tracer has seen start (open, or ended recently)."""
        run = self._runs.get(run_id)
        return run.ids if run is not None else self._ended.get(run_id)

    def start(self, event: RunStart) -> None:
        """Open the run's span; a child run's is a child of its parent run's span, in the
        parent's trace (the parent may have ended already, or be unknown here: its ids
        follow from its id all the same)."""
        if len(self._runs) >= self._max_runs:
            self.untraced_runs += 1
            return
        ids = TraceIds.of_start(event)
        context = Context()
        links: list[Link] = []
        if event.parent_id:
            parent = self.ids_of(event.parent_id) or TraceIds.of(event.parent_id, None,
                                                                  ids.trace_key)
            if parent.trace_id == ids.trace_id:
                context = _context(parent.trace_id, parent.run_span)
            else:  # a run whose log says it starts a trace of its own: linked instead
                links.append(Link(SpanContext(parent.trace_id, parent.run_span,
                                              is_remote=False, trace_flags=_SAMPLED),
                                  {"rlobs.link": "parent_run"}))
        attrs, dropped = attributes.run_attributes(event, self._limit, self._max_len)
        self._ids.use(ids.trace_id, ids.run_span)
        root = self._tracer.start_span(attributes.run_name(event), context=context,
                                       attributes=attrs, start_time=event.time_ns,
                                       links=links)
        self._runs[event.run_id] = _RunTrace(event, ids, root, len(attrs), dropped)
        # A child run stays whole in its parent's trace (a sweep, a rollout is one trace).
        self._runs[event.run_id].per = 0 if event.parent_id else self._steps_per_window

    @staticmethod
    def _window(run: _RunTrace, step: int) -> int:
        return TraceIds.window_of(step, run.per)

    def _step_home(self, run: _RunTrace, step: int) -> tuple[int, int]:
        """The trace and parent of step ``step``'s span: its window's root."""
        window = self._window(run, step)
        return run.ids.trace_of(window), run.ids.window_span(window)

    def step(self, event: Step) -> None:
        """Emit the step's span (if sampled) and the spans waiting for it; close the
        step's window when it is the window's last."""
        run = self._runs.get(event.run_id)
        if run is None:
            return
        if self._metrics is not None:
            self._metrics.step(event, run.family)
        start_ns, run.last_ns = run.last_ns, event.time_ns
        run.next_step = event.step + 1
        run.window_reward += event.reward if event.reward == event.reward else 0.0
        width = event.env_steps  # a vector record stands for indices first .. step
        first = event.step - width + 1
        self._release_orphans(run, first)
        spans = run.take(run.pending, event.step) if width == 1 else [
            span for index in range(first, event.step + 1)
            for span in run.take(run.pending, index)]
        kept = self._sampling.keep(event.step, width)
        trace_id, parent = self._step_home(run, event.step)
        if kept:
            self._emit(run, attributes.step_name(event), trace_id, parent,
                       run.ids.step(event.step), start_ns, event.time_ns,
                       attributes.step_attributes(event, self._limit, self._max_len))
        else:
            run.skipped_steps += 1
        for span in spans:
            self._tree(run, span, run.ids.step(event.step) if kept else None, trace_id)
        per = run.per
        if per and (event.step + 1) // per != first // per:  # its window's last index
            if self._window(run, first) > 0:
                self._close_window(run, self._window(run, first), event.time_ns, event.step)
            else:  # the run's own first steps: the next window starts here
                run.window_start, run.window_reward = event.time_ns, 0.0

    def _close_window(self, run: _RunTrace, window: int, end_ns: int, last_step: int,
                      error: str | None = None) -> None:
        """Build window ``window``'s root (linked to the run span), then what it held."""
        first = window * run.per
        attrs: dict[str, Any] = {
            attributes.KIND: "CHAIN", "rlobs.run_id": run.ids.run_id, "rlobs.window": window,
            "rlobs.first_step": first, "rlobs.last_step": last_step,
            "rlobs.window_reward": run.window_reward}
        link = Link(SpanContext(run.ids.trace_id, run.ids.run_span, is_remote=False,
                                trace_flags=_SAMPLED), {"rlobs.link": "run"})
        self._build((f"{attributes.run_name(run.start)} steps {first}-{last_step}",
                     run.ids.trace_of(window), 0, run.ids.window_span(window),
                     run.window_start, end_ns, attrs, error, error, (link,)))
        run.window_start, run.window_reward = end_ns, 0.0
        self._release(run, window)

    def _release(self, run: _RunTrace, window: int) -> None:
        for built in run.parked.pop(window, []):
            self._build(built)
            run.parked_count -= 1

    def span(self, event: Span) -> None:
        """Emit a span under its step or parent, or hold it until they arrive."""
        run = self._runs.get(event.run_id)
        if run is None:
            return
        if self._metrics is not None:
            self._metrics.span(event, run.family)
        parent = event.parent_span_id
        trace_id = self._step_home(run, event.step)[0]
        keep = self._sampling.keep(event.step)
        if parent:
            kept = run.done.get(parent)
            if kept is not None:  # the parent was built already (recorded out of order)
                self._tree(run, event, run.ids.span(parent) if kept else None, trace_id)
            elif self._hold(run):
                run.hold(run.waiting, parent, event)
            else:  # over the limit: built now, its parent's id known all the same
                self._tree(run, event, run.ids.span(parent) if keep else None, trace_id)
        elif event.step < run.next_step or not self._hold(run):
            # its step came first (recorded on another thread), or too much waits already
            self._tree(run, event, run.ids.step(event.step) if keep else None, trace_id)
        else:
            run.hold(run.pending, event.step, event)

    def _hold(self, run: _RunTrace) -> bool:
        if run.held < self._max_pending:
            return True
        self.dropped_spans += 1  # counted as built without waiting
        return False

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
        """Emit what still waits, the step the run ended in if it failed there, the open
        window, and end the run span."""
        run = self._runs.pop(event.run_id, None)
        if run is None:
            return
        # A failed run's last spans belong to the step it was producing (built below).
        unfinished = event.status is not RunStatus.FINISHED and \
            self._sampling.keep(run.next_step)
        for step in sorted(run.pending):
            trace_id, parent = self._step_home(run, step)
            if unfinished and step == run.next_step:
                parent = run.ids.step(step)
            for span in run.take(run.pending, step):
                self._tree(run, span, parent, trace_id)
        for parent in list(run.waiting):  # parents never recorded: under their step
            for span in run.take(run.waiting, parent):
                self._tree(run, span, run.ids.step(span.step)
                           if self._sampling.keep(span.step) else None,
                           self._step_home(run, span.step)[0])
        root = run.root
        root.set_attributes(attributes.end_attributes(
            event, run.skipped_steps, run.skipped_spans, run.attrs_dropped))
        end_ns = max(event.time_ns, run.start.time_ns)
        description = None
        if event.status is RunStatus.FINISHED:
            root.set_status(Status(StatusCode.OK))
        else:
            error = event.error or event.status.value
            description = f"{event.status.value}: {error}"
            root.set_status(Status(StatusCode.ERROR, description))
            root.add_event("exception", attributes.error_event(error), timestamp=end_ns)
            self._last_step(run, end_ns, description, error)
        window = self._window(run, run.next_step)
        started = run.next_step % max(run.per, 1) != 0  # it has steps
        if window > 0 and (started or description is not None):
            self._close_window(run, window, end_ns, max(run.next_step - 1, 0), description)
        for held in sorted(run.parked):
            self._release(run, held)
        root.end(end_time=end_ns)
        self._ended[event.run_id] = run.ids
        if len(self._ended) > _ENDED:
            self._ended.popitem(last=False)

    def _last_step(self, run: _RunTrace, end_ns: int, description: str, error: str) -> None:
        """The step a failed run was producing when it ended, with the error on it."""
        step = run.next_step
        if not self._sampling.keep(step):
            return
        attrs: dict[str, Any] = {attributes.KIND: "CHAIN", "rlobs.step": step,
                                 "rlobs.unfinished": True}
        trace_id, parent = self._step_home(run, step)
        self._emit(run, f"step {step}", trace_id, parent, run.ids.step(step), run.last_ns,
                   end_ns, attrs, description, error)

    def _release_orphans(self, run: _RunTrace, step: int) -> None:
        # Spans of a step that never arrived (dropped by a full queue) go under its window.
        for index in [k for k in run.pending if k < step]:
            trace_id, parent = self._step_home(run, index)
            for span in run.take(run.pending, index):
                self._tree(run, span, parent, trace_id)

    def _tree(self, run: _RunTrace, event: Span, parent: int | None, trace_id: int) -> None:
        """Build ``event`` under ``parent`` (``None``: skipped), then its waiting children."""
        stack = [(event, parent)]
        while stack:
            span, under = stack.pop()
            run.done[span.span_id] = under is not None
            if len(run.done) > _DONE:
                run.done.popitem(last=False)
            own = run.ids.span(span.span_id)
            if under is None:
                run.skipped_spans += 1
            else:
                self._emit(run, attributes.span_name(span), trace_id, under, own,
                           span.start_ns, span.end_ns,
                           attributes.span_attributes(span, self._limit, self._max_len),
                           span.error, span.error)
            children = run.take(run.waiting, span.span_id)
            stack.extend((child, own if under is not None else None) for child in children)

    def _emit(self, run: _RunTrace, name: str, trace_id: int, parent: int, span_id: int,
              start_ns: int, end_ns: int, attrs: Mapping[str, Any],
              description: str | None = None, error: str | None = None) -> None:
        """Build the span now if its trace's root is out, else hold it for the root."""
        built: _Built = (name, trace_id, parent, span_id, start_ns, end_ns, attrs,
                         description, error, ())
        window = self._window_of_trace(run, trace_id)
        if window is None or run.parked_count >= self._max_pending:
            self._build(built)
            return
        run.parked.setdefault(window, []).append(built)
        run.parked_count += 1

    def _window_of_trace(self, run: _RunTrace, trace_id: int) -> int | None:
        """The open window (0: the run's trace) a span of ``trace_id`` waits for, if any."""
        if trace_id == run.ids.trace_id:
            return 0
        window = self._window(run, run.next_step)
        for candidate in (window, window - 1):  # the current window, or the one closing
            if candidate > 0 and run.ids.trace_of(candidate) == trace_id \
                    and not self._closed(run, candidate):
                return candidate
        return None

    def _closed(self, run: _RunTrace, window: int) -> bool:
        return run.next_step >= (window + 1) * run.per

    def _build(self, built: _Built) -> None:
        name, trace_id, parent, span_id, start_ns, end_ns, attrs, description, error, \
            links = built
        self._ids.use(trace_id, span_id)
        context = _context(trace_id, parent) if parent else Context()
        span = self._tracer.start_span(name, context=context, attributes=attrs,
                                       start_time=start_ns, links=links)
        if error:
            span.set_status(Status(StatusCode.ERROR, description or error))
            span.add_event("exception", attributes.error_event(error), timestamp=end_ns)
        span.end(end_time=max(start_ns, end_ns))

    def end_all(self, error: str) -> None:
        """End every open run span as killed (the sink is closing)."""
        for run_id in list(self._runs):
            self.end(RunEnd(run_id, RunStatus.KILLED, 0, 0.0, 0, 0.0, error, {}, 0,
                            time.time_ns()))
