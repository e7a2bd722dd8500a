"""Span scopes: ``with run.span(name):`` times a block as a span of the current step.

The innermost open span of the current context (thread or task) is the parent of every
span of the same run recorded inside it, by a scope or by :meth:`rlobs.Run.record_span`
(a span of another run, e.g. a child run's first span inside its parent's span, has none).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ._clock import _WALL_OFFSET_NS, _now_ns

_current_span: contextvars.ContextVar[tuple[object, int] | None] = contextvars.ContextVar(
    "rlobs_current_span", default=None
)
"""``(owner, span_id)``: the innermost open span and the run it belongs to (its id source)."""

AddSpan = Callable[[str, int, int, Any, int, "int | None", "str | None"], None]
"""``add(name, start_ns, end_ns, attributes, span_id, parent_span_id, error)``."""
AddUsage = Callable[["str | None", float, float, "float | None"], None]
"""``usage(model, input_tokens, output_tokens, cost_usd)``: counts a call's tokens."""
_UNSET: Any = object()


def current_span_id(owner: object = None) -> int | None:
    """The id of the innermost span open in this context, if any (of ``owner``'s, a run's
    span-id source, when given)."""
    current = _current_span.get()
    if current is None or (owner is not None and current[0] is not owner):
        return None
    return current[1]


class SpanScope:
    """Times a block as a span; ``set(**attrs)`` adds attributes before it ends."""

    __slots__ = ("_add", "_attrs", "_id", "_ids", "_name", "_parent", "_start", "_token",
                 "_usage")

    def __init__(self, ids: Callable[[], int], add: AddSpan, name: str,
                 attributes: dict[str, Any], usage: AddUsage | None = None) -> None:
        self._ids = ids
        self._add = add
        self._usage = usage
        self._name = name
        self._attrs = attributes
        self._start = 0
        self._id = 0
        self._parent: int | None = None
        self._token: contextvars.Token[tuple[object, int] | None] | None = None

    def set(self, **attributes: Any) -> None:
        """Add attributes to the span."""
        self._attrs.update(attributes)

    def llm(self, model: str | None = None, *, input_tokens: float | None = None,
            output_tokens: float | None = None, finish_reasons: Any = None,
            cost_usd: float | None = None) -> None:
        """Record an LLM call's model, token usage and finish reasons on the span (GenAI
        and OpenInference attributes in OpenTelemetry), and count its tokens and cost in
        the step's and the run's metrics. Cost defaults to the price table's
        (:func:`rlobs.set_llm_prices`). Values that are not numbers are left out."""
        from ._llm import llm_attributes

        attrs, counted = llm_attributes(model, input_tokens, output_tokens, finish_reasons,
                                        cost_usd)
        self._attrs.update(attrs)
        if self._usage is not None:
            self._usage(*counted)

    def io(self, input: Any = _UNSET, output: Any = _UNSET) -> None:
        """Record the call's input and/or output text on the span (``input.value``,
        ``output.value``): strings as they are, other values as JSON, redacted and cut
        to ``RLOBS_CAPTURE_MAX_CHARS``."""
        from ._llm import INPUT, OUTPUT, capture

        if input is not _UNSET:
            self._attrs[INPUT] = capture(input)
        if output is not _UNSET:
            self._attrs[OUTPUT] = capture(output)

    @property
    def span_id(self) -> int:
        """The span's id in the run's log once entered (``0`` before, and for a no-op
        scope); :class:`rlobs.TraceIds` maps it to its OpenTelemetry id."""
        return self._id

    def __enter__(self) -> SpanScope:
        current = _current_span.get()
        self._parent = current[1] if current is not None and current[0] is self._ids else None
        self._id = self._ids()
        self._token = _current_span.set((self._ids, self._id))
        self._start = _now_ns()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        end = _now_ns()
        span_id = self._id
        if self._token is not None:
            _current_span.reset(self._token)
            self._token = None
        if not span_id:
            return
        error = None if exc is None else f"{type(exc).__name__}: {exc}"
        self._add(self._name, self._start + _WALL_OFFSET_NS, end + _WALL_OFFSET_NS,
                  self._attrs, span_id, self._parent, error)


class _NullSpan(SpanScope):
    __slots__ = ()

    def __init__(self) -> None:
        self._id = 0

    def set(self, **attributes: Any) -> None:
        pass

    def llm(self, model: str | None = None, *, input_tokens: float | None = None,
            output_tokens: float | None = None, finish_reasons: Any = None,
            cost_usd: float | None = None) -> None:
        pass

    def io(self, input: Any = _UNSET, output: Any = _UNSET) -> None:
        pass

    def __enter__(self) -> SpanScope:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        pass


NULL_SPAN = _NullSpan()
"""The shared no-op scope of runs whose sinks take no spans."""
