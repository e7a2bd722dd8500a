"""Trace and span ids as pure functions of what a run log records.

The OpenTelemetry sink builds spans in the shipper from a run's log, perhaps twice (a
replay after a lost export); the training process may want third-party instrumentation
(an HTTP or LLM client calling the global tracer) to nest under the step or span it runs
in. Both work only if every id follows from the run id and the recorded span ids alone:
the same log gives the same trace, and the training process can name a span's parent
before the span exists. The ids are BLAKE2b digests of those names (never 0, which
OpenTelemetry reserves for "invalid").

:func:`otel_context` hands the training process an OpenTelemetry context whose current span
follows the run: inside ``with run.span(...)`` it is that span, between spans it is the
step being produced. OpenTelemetry is imported only when it is called.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._run import Run


def _digest(size: int, *parts: object) -> int:
    text = "\x1f".join(str(part) for part in parts).encode()
    value = int.from_bytes(hashlib.blake2b(text, digest_size=size).digest(), "big")
    return value or 1


class TraceIds:
    """The OpenTelemetry ids of one run's spans (see the module docstring).

    Args:
        run_id: the run.
        trace_key: the trace the run's segment belongs to: its root run's id (a child
            run joins its parent's trace), with ``:<resumed_at>`` for a root segment that
            resumed a log (:meth:`key_for`).
        segment: ``RunStart.resumed_at`` of the run's current segment (``0`` for the
            first): span ids restart with each segment.
    """

    __slots__ = ("run_id", "segment", "trace_id", "trace_key")

    def __init__(self, run_id: str, trace_key: str, segment: int = 0) -> None:
        self.run_id = run_id
        self.segment = segment
        self.trace_key = trace_key
        self.trace_id = _digest(16, "rlobs.trace", trace_key)

    @staticmethod
    def key_for(run_id: str, resumed_at: int | None = None,
                parent_key: str | None = None) -> str:
        """The trace key of a run's segment: its parent's (a child run joins its parent's
        trace), else its id, with ``:<resumed_at>`` for a segment that resumed a log."""
        if parent_key:
            return parent_key
        return run_id if not resumed_at else f"{run_id}:{resumed_at}"

    @classmethod
    def of(cls, run_id: str, resumed_at: int | None = None,
           parent_key: str | None = None) -> TraceIds:
        """The ids of a run's segment (``RunStart.run_id``, ``RunStart.resumed_at``, and
        the parent's trace key if it has a parent)."""
        return cls(run_id, cls.key_for(run_id, resumed_at, parent_key), resumed_at or 0)

    @classmethod
    def of_start(cls, start: Any) -> TraceIds:
        """The ids of the run a ``RunStart`` starts (its recorded ``trace``; for a log
        written before runs recorded it, its parent's id or its own)."""
        key = start.trace or cls.key_for(start.run_id, start.resumed_at, start.parent_id)
        return cls(start.run_id, key, start.resumed_at or 0)

    @property
    def trace_hex(self) -> str:
        """The trace id as 32 hex digits (as viewers show it)."""
        return f"{self.trace_id:032x}"

    @property
    def run_span(self) -> int:
        """The run span's id."""
        return _digest(8, "rlobs.run", self.run_id, self.segment)

    @staticmethod
    def window_of(step: int, window_steps: int) -> int:
        """The live window step ``step`` is in (``0``: the run's own trace)."""
        return step // window_steps if window_steps > 0 else 0

    def trace_of(self, window: int) -> int:
        """The trace id of window ``window`` (window 0 is the run's trace)."""
        return self.trace_id if window == 0 else _digest(16, "rlobs.window", self.run_id,
                                                         self.segment, window)

    def window_span(self, window: int) -> int:
        """The id of window ``window``'s root span (window 0's is the run span)."""
        return self.run_span if window == 0 else _digest(8, "rlobs.window", self.run_id,
                                                         self.segment, window)

    def step(self, step: int) -> int:
        """Step ``step``'s span id."""
        return _digest(8, "rlobs.step", self.run_id, step)

    def span(self, span_id: int) -> int:
        """The id of the span the log records as ``span_id``."""
        return _digest(8, "rlobs.span", self.run_id, self.segment, span_id)


def _live_span(run: Run) -> Any:
    """An OpenTelemetry span that is, whenever asked, the run's innermost open span or
    else the step it is producing (never recording: the sink builds the real ones)."""
    from opentelemetry import trace

    ids = run.trace_ids
    first, every = run.span_sampling
    window_steps = run.window_steps

    class LiveSpan(trace.NonRecordingSpan):
        def __init__(self) -> None:
            super().__init__(trace.INVALID_SPAN_CONTEXT)

        def get_span_context(self) -> trace.SpanContext:
            step = run.steps
            kept = step < first or (every > 0 and step % every == 0)
            inner = run.current_span_id
            span_id = ids.step(step) if inner is None else ids.span(inner)
            flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if kept else 0)
            trace_id = ids.trace_of(ids.window_of(step, window_steps))
            return trace.SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags)

        def is_recording(self) -> bool:
            return False

    return LiveSpan()


def otel_context(run: Run) -> Any:
    """An OpenTelemetry ``Context`` whose current span follows ``run`` (see the module
    docstring): spans that OpenTelemetry instrumentation starts in it join the run's trace
    under the span or step they run in, in the calling task or thread.

    Raises:
        SinkUnavailable: OpenTelemetry is not installed (``pip install "rlobs[otel]"``).
    """
    from ._sink import require

    require("opentelemetry.trace", "otel")
    from opentelemetry import trace

    return trace.set_span_in_context(_live_span(run))


@contextlib.contextmanager
def use_otel_context(run: Run) -> Iterator[None]:
    """Make :func:`otel_context` the current OpenTelemetry context inside the block.

    Raises:
        SinkUnavailable: OpenTelemetry is not installed.
    """
    context = otel_context(run)
    from opentelemetry import context as otel

    token = otel.attach(context)
    try:
        yield
    finally:
        otel.detach(token)
