"""Sinks for testing code that uses rlobs — and rlobs' own isolation guarantees.

- :class:`RecordingSink` keeps every event it receives.
- :class:`FailingSink` raises from chosen hooks (or from ``open``).
- :class:`HangingSink` blocks forever (until released) in a chosen hook.
- :class:`SlowSink` sleeps in every hook.

All record what they received, so a test can assert what reached them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any, TypeVar

from ._events import Artifact, Event, Heartbeat, RunEnd, RunStart, RunUpdate, Span, Step
from ._sink import Overflow, Sink

E = TypeVar("E")

HOOKS = ("open", "on_run_start", "on_step", "on_span", "on_run_update", "on_artifact",
         "on_heartbeat", "on_run_end", "flush", "close")


class RecordingSink(Sink):
    """Keeps every event, in order; thread-safe to read while the hub runs.

    Args:
        name: the name it reports under (distinct names let one hub hold several).
        capacity: queue size (``None``: the hub's default).
        overflow: the overflow policy to declare.
        wants_spans: whether it receives spans.
    """

    name = "recording"

    def __init__(self, name: str = "recording", *, capacity: int | None = None,
                 overflow: Overflow = Overflow.DROP, wants_spans: bool = True) -> None:
        self.name = name
        self.capacity = capacity
        self.overflow = overflow
        self.wants_spans = wants_spans
        self.events: list[Event] = []
        self.calls: list[str] = []
        self.opened = False
        self.closed = False
        self._cond = threading.Condition()

    def _record(self, hook: str, event: Event | None = None) -> None:
        with self._cond:
            self.calls.append(hook)
            if event is not None:
                self.events.append(event)
            self._cond.notify_all()

    def of_type(self, kind: type[E]) -> list[E]:
        """Received events of one type, in order."""
        with self._cond:
            return [e for e in self.events if isinstance(e, kind)]

    def wait_for(self, predicate: Any, timeout_s: float = 10.0) -> bool:
        """Wait until ``predicate(self)`` is true; returns whether it became true."""
        with self._cond:
            return bool(self._cond.wait_for(lambda: predicate(self), timeout=timeout_s))

    def open(self) -> None:
        self.opened = True
        self._record("open")

    def on_run_start(self, event: RunStart) -> None:
        self._record("on_run_start", event)

    def on_step(self, event: Step) -> None:
        self._record("on_step", event)

    def on_span(self, event: Span) -> None:
        self._record("on_span", event)

    def on_run_update(self, event: RunUpdate) -> None:
        self._record("on_run_update", event)

    def on_artifact(self, event: Artifact) -> None:
        self._record("on_artifact", event)

    def on_heartbeat(self, event: Heartbeat) -> None:
        self._record("on_heartbeat", event)

    def on_run_end(self, event: RunEnd) -> None:
        self._record("on_run_end", event)

    def flush(self) -> None:
        self._record("flush")

    def close(self) -> None:
        self.closed = True
        self._record("close")


class _Intercepting(RecordingSink):
    """Records, then calls :meth:`_intercept` for the hooks named in ``hooks``."""

    def __init__(self, name: str, hooks: Iterable[str], **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.hooks = frozenset(hooks)
        unknown = self.hooks - set(HOOKS)
        if unknown:
            raise ValueError(f"unknown hooks {sorted(unknown)}; choose from {HOOKS}")

    def _intercept(self, hook: str) -> None:
        raise NotImplementedError

    def _record(self, hook: str, event: Event | None = None) -> None:
        super()._record(hook, event)
        if hook in self.hooks:
            self._intercept(hook)


class FailingSink(_Intercepting):
    """Raises ``RuntimeError`` from each hook named in ``hooks`` (default: every hook but
    ``open`` and ``close``), after recording the call."""

    def __init__(self, name: str = "failing", hooks: Iterable[str] | None = None,
                 **kwargs: Any) -> None:
        default = [h for h in HOOKS if h not in ("open", "close")]
        super().__init__(name, default if hooks is None else hooks, **kwargs)

    def _intercept(self, hook: str) -> None:
        raise RuntimeError(f"{self.name} fails in {hook} (on purpose)")


class HangingSink(_Intercepting):
    """Blocks in the hooks named in ``hooks`` (default ``on_step``) until :meth:`release`."""

    def __init__(self, name: str = "hanging", hooks: Iterable[str] = ("on_step",),
                 **kwargs: Any) -> None:
        super().__init__(name, hooks, **kwargs)
        self.entered = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        """Let every blocked hook return."""
        self._released.set()

    def _intercept(self, hook: str) -> None:
        self.entered.set()
        self._released.wait()


class SlowSink(_Intercepting):
    """Sleeps ``delay_s`` in every event hook (a crawling network sink)."""

    def __init__(self, name: str = "slow", delay_s: float = 0.001, **kwargs: Any) -> None:
        super().__init__(name, [h for h in HOOKS if h.startswith("on_")], **kwargs)
        self.delay_s = delay_s

    def _intercept(self, hook: str) -> None:
        time.sleep(self.delay_s)
