"""Span scopes: ``with run.span(name):`` times a block as a span of the current step."""

from __future__ import annotations

import contextvars
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._clock import _WALL_OFFSET_NS, _now_ns

if TYPE_CHECKING:
    from ._run import Run

_current_span: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "rlobs_current_span", default=None
)


class SpanScope:
    """Times a block as a span; ``set(**attrs)`` adds attributes before it ends."""

    __slots__ = ("_attrs", "_name", "_parent", "_run", "_start", "_token")

    def __init__(self, run: Run, name: str, attributes: dict[str, Any]) -> None:
        self._run = run
        self._name = name
        self._attrs = attributes
        self._start = 0
        self._parent: int | None = None
        self._token: contextvars.Token[int | None] | None = None

    def set(self, **attributes: Any) -> None:
        """Add attributes to the span."""
        self._attrs.update(attributes)

    def __enter__(self) -> SpanScope:
        self._parent = _current_span.get()
        self._token = _current_span.set(next(self._run._span_ids))
        self._start = _now_ns()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        end = _now_ns()
        run = self._run
        span_id = _current_span.get()
        if self._token is not None:
            _current_span.reset(self._token)
        if run._end is not None or span_id is None:
            return
        error = None if exc is None else f"{type(exc).__name__}: {exc}"
        run._add_span(self._name, self._start + _WALL_OFFSET_NS, end + _WALL_OFFSET_NS,
                      self._attrs, span_id, self._parent, error)


class _NullSpan(SpanScope):
    __slots__ = ()

    def __init__(self) -> None:
        pass

    def set(self, **attributes: Any) -> None:
        pass

    def __enter__(self) -> SpanScope:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        pass


_NULL_SPAN = _NullSpan()
