"""One sink's bounded queue and worker: the hub's failure boundary.

A run collects its steps and spans in chunks of ~256; the hub's loop turns each chunk into
events and puts it in every sink's queue in one append (``offer_batch``), so a step's cost
does not grow with the number of sinks and never crosses threads. The worker, a task on
the hub's event loop, wakes on a short timer (the sink's ``flush_interval_s``; it first
collects runs' partial chunks), when the queue passes a high-water mark, or for lifecycle
events, and hands the whole batch to the sink's hooks on a worker thread. Every hook call
is wrapped: exceptions are logged and counted, never propagated; cancellation abandons a
hung hook instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from ._events import (
    Artifact,
    Event,
    Heartbeat,
    RunEnd,
    RunStart,
    RunStatus,
    RunUpdate,
    Span,
    Step,
)
from ._exceptions import SinkUnavailable
from ._log import logger
from ._sink import Overflow, Sink

_BATCH = 4096
_monotonic = time.monotonic
_HOOK_NAMES = {RunStart: "on_run_start", Step: "on_step", Span: "on_span",
               RunUpdate: "on_run_update", Artifact: "on_artifact", Heartbeat: "on_heartbeat",
               RunEnd: "on_run_end"}


class SinkState(enum.StrEnum):
    """Where a sink is in its life."""

    OPENING = "opening"
    AVAILABLE = "available"
    DISABLED = "disabled"
    UNAVAILABLE = "unavailable"
    CLOSED = "closed"


@dataclass(frozen=True)
class SinkStatus:
    """A snapshot of one sink, as returned by ``Hub.status()``."""

    name: str
    enabled: bool
    available: bool
    detail: str | None
    delivered: int
    dropped: int
    errors: int
    last_error: str | None
    queued: int


class _Ack:
    """A marker in the queue: resolved once everything before it was delivered and flushed."""

    __slots__ = ("close", "future")

    def __init__(self, close: bool = False) -> None:
        self.close = close
        self.future: Future[None] = Future()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SinkUnavailable):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class SinkWorker:
    """Feeds one :class:`Sink` from its own bounded queue (see module docstring)."""

    def __init__(self, sink: Sink, *, queue_size: int, on_state: Callable[[], None],
                 collect: Callable[[], None] = lambda: None) -> None:
        self.sink = sink
        self.name = sink.name
        self.state = SinkState.OPENING if sink.enabled else SinkState.DISABLED
        self.delivered = 0
        self.dropped = 0
        self.errors = 0
        self.last_error: str | None = None
        self._detail: str | None = None
        self._cap = sink.capacity or queue_size
        self._high = max(1, self._cap // 4)
        self._block_s = sink.block_timeout_s if sink.overflow is Overflow.BLOCK else 0.0
        self._may_block = True
        self._buf: deque[Any] = deque()
        self._queued = 0  # steps and spans in _buf (lifecycle events do not count)
        self._mutex = threading.Lock()
        self._collect = collect
        self._dropped_by_run: dict[str, int] = {}
        self._started: set[str] = set()
        self._busy_since: float | None = None
        self._hook = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_event: anyio.Event | None = None
        self._wake_pending = False
        self._on_state = on_state
        self.opened: Future[None] = Future()
        self._hooks: dict[type, Callable[[Any], None] | None] = {
            RunStart: sink.on_run_start,
            Step: sink.on_step,
            Span: sink.on_span if sink.wants_spans else None,
            RunUpdate: sink.on_run_update,
            Artifact: sink.on_artifact,
            Heartbeat: sink.on_heartbeat,
            RunEnd: sink.on_run_end,
        }

    # ------------------------------------------------------------------ producer side

    @property
    def accepting(self) -> bool:
        """Whether events offered now will be delivered (opening or available)."""
        return self.state is SinkState.OPENING or self.state is SinkState.AVAILABLE

    def would_block(self, n: int) -> bool:
        """Whether offering ``n`` more events now would make the producer wait."""
        return bool(self._block_s) and self._may_block and self._queued + n > self._cap

    def offer_batch(self, batch: list[Any], run_id: str, *, block: bool = True) -> None:
        """Queue a run's steps and spans (never mutated afterwards): the hot path's fan-out.

        What does not fit is dropped and counted, unless the sink declared
        ``Overflow.BLOCK`` and ``block`` is set: then the producer waits, bounded, for room.
        """
        while batch:
            with self._mutex:
                room = self._cap - self._queued
                if room > 0:
                    part = batch if room >= len(batch) else batch[:room]
                    self._buf.append(part)
                    self._queued += len(part)
                    batch = batch[len(part):] if part is not batch else []
                queued = self._queued
            if queued >= self._high:
                self.wake()
            if batch and not (block and self._wait_for_room()):
                break
        if batch:
            self._count_dropped(batch, run_id)

    def stop_blocking(self) -> None:
        """Drop instead of waiting until the queue drains below its high-water mark."""
        self._may_block = False

    def _wait_for_room(self) -> bool:
        if not (self._block_s and self._may_block):
            return False
        self.wake()
        deadline = time.monotonic() + self._block_s
        while self._queued >= self._cap and time.monotonic() < deadline:
            time.sleep(0.0002)
        if self._queued < self._cap:
            return True
        self._may_block = False  # do not stall every step on a stuck sink
        return False

    def _count_dropped(self, events: list[Any], run_id: str) -> None:
        n = len(events) if self.sink.wants_spans else sum(type(e) is Step for e in events)
        self.dropped += n
        self._dropped_by_run[run_id] = self._dropped_by_run.get(run_id, 0) + n

    def offer_lifecycle(self, event: Event, *, wake: bool = True) -> None:
        """Queue an event that is never dropped (run start/end, updates, heartbeats)."""
        self._buf.append(event)
        if wake:
            self.wake()

    def barrier(self, *, close: bool = False) -> Future[None]:
        """A future resolved once everything queued so far is delivered and flushed."""
        ack = _Ack(close)
        if not self.accepting:
            ack.future.set_result(None)
            return ack.future
        self._buf.append(ack)
        self.wake()
        return ack.future

    def take_dropped(self, run_id: str) -> int:
        """This run's drop count so far (forgotten afterwards)."""
        return self._dropped_by_run.pop(run_id, 0)

    def wake(self) -> None:
        """Ask the worker to deliver now, from any thread, never waiting for the loop.

        The hub's loop runs anyio's asyncio backend; ``call_soon_threadsafe`` is the one
        way in that cannot block (a portal call waits for the loop, and the loop may be
        waiting for the caller).
        """
        loop = self._loop
        if loop is None or self._wake_pending:
            return
        self._wake_pending = True
        try:
            loop.call_soon_threadsafe(self._set_wake)
        except RuntimeError:  # the hub's loop is gone; close takes over
            self._wake_pending = False

    def _set_wake(self) -> None:
        if self._wake_event is not None:
            self._wake_event.set()

    def stalled_for(self) -> float:
        """Seconds since the sink last finished a hook call while busy (0 when idle).

        A slow sink making progress is not stalled; a hung one is.
        """
        since = self._busy_since
        return 0.0 if since is None else time.monotonic() - since

    def status(self) -> SinkStatus:
        """A cheap snapshot; safe from any thread."""
        detail = self._detail
        if detail is None and self.state is SinkState.AVAILABLE:
            stalled = self.stalled_for()
            detail = f"stalled in {self._hook} for {stalled:.1f}s" if stalled > 1.0 else None
            if detail is None:
                try:
                    detail = self.sink.detail()
                except Exception as exc:
                    detail = f"detail() failed: {_describe(exc)}"
        return SinkStatus(
            name=self.name,
            enabled=self.state is not SinkState.DISABLED,
            available=self.state is SinkState.AVAILABLE,
            detail=detail if detail is not None else self.state.value,
            delivered=self.delivered,
            dropped=self.dropped,
            errors=self.errors,
            last_error=self.last_error,
            queued=self._queued,
        )

    # ------------------------------------------------------------------ worker side

    async def serve(self, open_timeout_s: float) -> None:
        """The worker task: open the sink, then deliver batches until closed."""
        self._wake_event = anyio.Event()
        self._loop = asyncio.get_running_loop()
        if self.state is SinkState.DISABLED:
            self._set_state(SinkState.DISABLED, "disabled by configuration")
            return
        try:
            if await self._open(open_timeout_s):
                await self._run_batches()
        except BaseException:
            self._set_state(SinkState.CLOSED, "abandoned: did not close in time")
            raise
        finally:
            self._release_waiters()

    async def _open(self, timeout_s: float) -> bool:
        with anyio.move_on_after(timeout_s) as scope:
            try:
                await self._in_thread(self.sink.open)
            except Exception as exc:
                logger.warning("sink unavailable", sink=self.name, reason=_describe(exc))
                self._set_state(SinkState.UNAVAILABLE, _describe(exc))
                return False
        if scope.cancelled_caught:
            self._set_state(SinkState.UNAVAILABLE, f"open timed out after {timeout_s:g}s")
            return False
        self._set_state(SinkState.AVAILABLE, None)
        return True

    async def _run_batches(self) -> None:
        interval = self.sink.flush_interval_s
        while True:
            if not self._buf:
                with anyio.move_on_after(interval):
                    assert self._wake_event is not None
                    await self._wake_event.wait()
            self._wake_event = anyio.Event()
            self._wake_pending = False
            self._collect()  # runs' pending chunks, so a quiet producer's steps go out too
            batch = self._take()
            if batch and await self._in_thread(self._deliver, batch):
                return

    async def _in_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        self._busy_since = time.monotonic()
        try:
            return await anyio.to_thread.run_sync(func, *args, abandon_on_cancel=True)
        finally:
            self._busy_since = None

    def _take(self) -> list[Any]:
        """Up to ``_BATCH`` events off the queue, chunks flattened, in order."""
        buf = self._buf
        events: list[Any] = []
        with self._mutex:
            while buf and len(events) < _BATCH:
                item = buf.popleft()
                if type(item) is list:
                    events += item
                    self._queued -= len(item)
                else:
                    events.append(item)
            if self._queued < self._high:
                self._may_block = True
        return events

    def _deliver(self, batch: list[Any]) -> bool:
        """Run on the worker thread: hand events to hooks. Returns True once closed."""
        hooks, started = self._hooks, self._started
        last_kind: type | None = None
        hook: Callable[[Any], None] | None = self.sink.on_step
        for count, event in enumerate(batch, 1):
            kind = type(event)
            if kind is _Ack:
                self._call("flush", self.sink.flush)
                if event.close:
                    self._close_sink()
                event.future.set_result(None)
                if event.close:
                    return True
                continue
            run_id = event[0]
            if kind is RunStart:
                started.add(run_id)
            elif run_id not in started:
                continue  # never show a sink events outside a start..end it saw
            elif kind is RunEnd:
                started.discard(run_id)
            if kind is not last_kind:  # runs of one kind are the norm: look up once
                last_kind, hook = kind, hooks[kind]
                self._hook = _HOOK_NAMES[kind]
            if hook is None:
                continue  # a span, for a sink that takes none
            try:
                hook(event)
            except Exception as exc:
                self._failed(self._hook, exc)
            else:
                self.delivered += 1
            if not count & 15:
                self._busy_since = _monotonic()  # progress: a slow sink is not a hung one
        self._call("flush", self.sink.flush)
        return False

    def _close_sink(self) -> None:
        for run_id in sorted(self._started):  # belt and braces: no run left open in a sink
            end = RunEnd(run_id, RunStatus.KILLED, 0, 0.0, 0, 0.0,
                         "hub closed before the run ended", {}, 0, time.time_ns())
            self._call("on_run_end", self.sink.on_run_end, end)
        self._started.clear()
        self._call("close", self.sink.close)
        self._set_state(SinkState.CLOSED, None)

    def _call(self, hook: str, func: Callable[..., None], *args: Any) -> None:
        self._hook = hook
        try:
            func(*args)
        except Exception as exc:
            self._failed(hook, exc)

    def _failed(self, hook: str, exc: Exception) -> None:
        self.errors += 1
        self.last_error = f"{hook}: {_describe(exc)}"
        if self.errors & (self.errors - 1) == 0:  # 1, 2, 4, 8, ...: bounded log volume
            logger.warning("sink hook failed", sink=self.name, hook=hook,
                           error=_describe(exc), errors=self.errors)

    def _set_state(self, state: SinkState, detail: str | None) -> None:
        self.state = state
        self._detail = detail
        if state is not SinkState.AVAILABLE and state is not SinkState.OPENING:
            self._release_waiters()
        if not self.opened.done():
            self.opened.set_result(None)
        self._on_state()

    def _release_waiters(self) -> None:
        """Resolve every queued barrier so no caller waits on a sink that will not run."""
        with self._mutex:
            items, self._queued = list(self._buf), 0
            self._buf.clear()
        for item in items:
            if type(item) is _Ack and not item.future.done():
                item.future.set_result(None)
