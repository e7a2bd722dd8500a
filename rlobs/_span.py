"""Span scopes: ``with run.span(name):`` times a block as a span of the current step.

The innermost open span of the current context (thread or task) is the parent of every
span recorded inside it, by a scope or by :meth:`rlobs.Run.record_span`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ._clock import _WALL_OFFSET_NS, _now_ns

_current_span: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "rlobs_current_span", default=None
)

AddSpan = Callable[[str, int, int, Any, int, "int | None", "str | None"], None]
"""``add(name, start_ns, end_ns, attributes, span_id, parent_span_id, error)``."""


def current_span_id() -> int | None:
    """The id of the innermost span open in this context, if any."""
    return _current_span.get()


class SpanScope:
    """Times a block as a span; ``set(**attrs)`` adds attributes before it ends."""

    __slots__ = ("_add", "_attrs", "_id", "_ids", "_name", "_parent", "_start", "_token")

    def __init__(self, ids: Callable[[], int], add: AddSpan, name: str,
                 attributes: dict[str, Any]) -> None:
        self._ids = ids
        self._add = add
        self._name = name
        self._attrs = attributes
        self._start = 0
        self._id = 0
        self._parent: int | None = None
        self._token: contextvars.Token[int | None] | None = None

    def set(self, **attributes: Any) -> None:
        """Add attributes to the span."""
        self._attrs.update(attributes)

    @property
    def span_id(self) -> int:
        """The span's id in the run's log once entered (``0`` before, and for a no-op
        scope); :class:`rlobs.TraceIds` maps it to its OpenTelemetry id."""
        return self._id

    def __enter__(self) -> SpanScope:
        self._parent = _current_span.get()
        self._id = self._ids()
        self._token = _current_span.set(self._id)
        self._start = _now_ns()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        end = _now_ns()
        span_id = _current_span.get()
        if self._token is not None:
            _current_span.reset(self._token)
        if span_id is None:
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

    def __enter__(self) -> SpanScope:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        pass


NULL_SPAN = _NullSpan()
"""The shared no-op scope of runs whose sinks take no spans."""
