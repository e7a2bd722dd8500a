"""One in-process sink's bounded queue and worker thread: the host's failure boundary.

The run-log writer hands each run's steps and spans to every in-process sink in chunks
(:meth:`SinkWorker.offer_batch`, one append per chunk) and lifecycle events one by one
(:meth:`SinkWorker.offer`). The worker thread wakes on a short timer (the sink's
``flush_interval_s``), past a high-water mark, or for a lifecycle event, and hands the
batch to the sink's hooks through a :class:`Deliverer`, which the shipper process uses
too: every hook call is wrapped, exceptions are logged and counted, never propagated.

Bounded everywhere: steps and spans that do not fit are dropped and counted per run;
lifecycle events are never dropped, and behind a stalled sink a run's updates and
heartbeats are merged into the one still queued instead of piling up. When a run ends,
:meth:`SinkWorker.abandon`, after a bounded wait for the sink to take what is queued for
it, counts the rest — queued and in flight alike — as dropped, so the run's end says exactly
how many of its events each sink never got.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._events import Artifact, Event, Heartbeat, RunEnd, RunStart, RunStatus, RunUpdate, Span, Step
from ._exceptions import SinkUnavailable
from ._log import logger
from ._params import redact_text
from ._sink import Overflow, Sink

_BATCH = 4096
_LIFECYCLE_LIMIT = 1024  # queued updates past which a run's updates merge into one
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
    """A snapshot of one sink, as returned by ``Hub.status()``.

    ``where`` is ``"process"`` for a sink fed inside the training process and
    ``"shipper"`` for one the log directory's shipper runs (its figures are the shipper's:
    ``queued`` is what it still has to ship, over every run it ships).
    """

    name: str
    enabled: bool
    available: bool
    detail: str | None
    delivered: int
    dropped: int
    errors: int
    last_error: str | None
    queued: int
    where: str = "process"


def describe(exc: BaseException) -> str:
    """``"Type: message"`` of an exception (a :class:`SinkUnavailable` as its message)."""
    if isinstance(exc, SinkUnavailable):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class Deliverer:
    """Calls one sink's hooks in event order; the one place their errors are caught.

    A sink only ever sees events of runs whose start it got, and one end for each.
    """

    def __init__(self, sink: Sink,
                 log_path: Callable[[str], Path | None] = lambda run_id: None) -> None:
        self.sink = sink
        self.name = sink.name
        self.log_path = log_path
        self.errors = 0
        self.last_error: str | None = None
        self.hook = ""
        self.started: set[str] = set()
        self.hooks: dict[type, Callable[[Any], None] | None] = {
            RunStart: sink.on_run_start, Step: sink.on_step,
            Span: sink.on_span if sink.wants_spans else None,
            RunUpdate: sink.on_run_update, Artifact: sink.on_artifact,
            Heartbeat: sink.on_heartbeat, RunEnd: sink.on_run_end,
        }

    def one(self, event: Event) -> bool:
        """Deliver one event; True if a hook took it (False: skipped, or it raised)."""
        kind = type(event)
        run_id = event[0]
        if kind is RunStart:
            self.started.add(run_id)
            path = self.log_path(run_id)
            if path is not None:
                self.call("log_file", self.sink.log_file, run_id, path)
        elif run_id not in self.started:
            return False
        elif kind is RunEnd:
            self.started.discard(run_id)
        hook = self.hooks[kind]
        if hook is None:
            return False
        self.hook = _HOOK_NAMES[kind]
        try:
            hook(event)
        except Exception as exc:
            self.failed(self.hook, exc)
            return False
        return True

    def call(self, hook: str, func: Callable[..., Any], *args: Any) -> Any:
        """Call a non-event hook (``open`` aside), its errors caught and counted."""
        self.hook = hook
        try:
            return func(*args)
        except Exception as exc:
            self.failed(hook, exc)
            return None

    def end_unended(self, reason: str) -> None:
        """End, as ``killed``, every run whose start the sink saw and whose end it did not."""
        for run_id in sorted(self.started):
            end = RunEnd(run_id, RunStatus.KILLED, 0, 0.0, 0, 0.0, reason, {}, 0,
                         time.time_ns())
            self.call("on_run_end", self.sink.on_run_end, end)
        self.started.clear()

    def failed(self, hook: str, exc: Exception) -> None:
        """Count a hook's failure; log the 1st, 2nd, 4th, 8th, … (bounded log volume)."""
        self.errors += 1
        self.last_error = f"{hook}: {describe(exc)}"
        if self.errors & (self.errors - 1) == 0:
            logger.warning("sink hook failed", sink=self.name, hook=hook,
                           error=describe(exc), errors=self.errors)


class _Ack:
    """A marker in the queue: resolved once everything before it was delivered."""

    __slots__ = ("close", "future")

    def __init__(self, close: bool = False) -> None:
        self.close = close
        self.future: Future[None] = Future()


class _Slot:
    """A queued update or heartbeat that later ones of its run may merge into."""

    __slots__ = ("event",)

    def __init__(self, event: RunUpdate | Heartbeat) -> None:
        self.event: RunUpdate | Heartbeat = event


def _merge(old: RunUpdate | Heartbeat, new: RunUpdate | Heartbeat) -> RunUpdate | Heartbeat:
    if isinstance(old, RunUpdate) and isinstance(new, RunUpdate):
        return RunUpdate(new.run_id, {**old.params, **new.params}, {**old.tags, **new.tags},
                         {**old.metrics, **new.metrics}, new.time_ns)
    return new


class SinkWorker:
    """Feeds one in-process :class:`Sink` from its own bounded queue (module docstring)."""

    def __init__(self, sink: Sink, *, queue_size: int,
                 log_path: Callable[[str], Path | None] = lambda run_id: None) -> None:
        self.sink = sink
        self.name = sink.name
        self.state = SinkState.OPENING if sink.enabled else SinkState.DISABLED
        self.dropped = 0
        self.delivered = 0
        self.opened: Future[None] = Future()
        self._out = Deliverer(sink, log_path)
        self._detail: str | None = None
        self._cap = sink.capacity or queue_size
        self._high = max(1, self._cap // 4)
        self._block_s = sink.block_timeout_s if sink.overflow is Overflow.BLOCK else 0.0
        self._may_block = True
        self._buf: deque[Any] = deque()
        self._queued = 0  # steps and spans in _buf
        self._lifecycle = 0  # coalescable events in _buf
        self._slots: dict[tuple[str, type], _Slot] = {}
        self._cond = threading.Condition(threading.Lock())
        self._dropped_by_run: dict[str, int] = {}
        self._abandoned: set[str] = set()
        self._batch: list[Any] = []
        self._index = 0  # in the current batch: the event in a hook now, else the next one
        self._in_hook_since: float | None = None
        self._in_hook_dropped = False  # the event in a hook was counted dropped
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ producer side

    @property
    def accepting(self) -> bool:
        """Whether events offered now will be delivered (opening or available)."""
        return self.state is SinkState.OPENING or self.state is SinkState.AVAILABLE

    def start(self) -> None:
        """Start the worker thread, which opens the sink first."""
        if self._thread is not None:
            return
        if self.state is SinkState.DISABLED:
            self._set_state(SinkState.DISABLED, "disabled by configuration")
            return
        self._thread = threading.Thread(target=self._main, name=f"rlobs-sink-{self.name}",
                                        daemon=True)  # a hung sink never holds up exit
        self._thread.start()

    def offer_batch(self, batch: list[Any], run_id: str, *, block: bool = False) -> None:
        """Queue one run's steps and spans (never mutated afterwards).

        What does not fit is dropped and counted; an ``Overflow.BLOCK`` sink makes the
        caller wait, at most ``block_timeout_s``, for room when ``block`` is set.
        """
        if not self.wants(batch):
            return
        while batch:
            with self._cond:
                room = self._cap - self._queued
                if room > 0:
                    part = batch if room >= len(batch) else batch[:room]
                    self._buf.append(part)
                    self._queued += len(part)
                    batch = batch[len(part):] if part is not batch else []
                if self._queued >= self._high:
                    self._cond.notify()
            if batch and not (block and self._wait_for_room()):
                break
        if batch:
            self._count_dropped(run_id, self._countable(batch))

    def wants(self, batch: list[Any]) -> bool:
        """Whether the sink takes any of ``batch`` now."""
        return self.accepting and (self.sink.wants_spans or any(type(e) is Step for e in batch))

    def _countable(self, events: list[Any]) -> int:
        return len(events) if self.sink.wants_spans else sum(type(e) is Step for e in events)

    def _wait_for_room(self) -> bool:
        if not (self._block_s and self._may_block):
            return False
        deadline = time.monotonic() + self._block_s
        with self._cond:
            self._cond.notify()
            while self._queued >= self._cap and self.accepting:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._may_block = False  # do not stall every chunk on a stuck sink
                    return False
                self._cond.wait(min(left, 0.01))
        return self.accepting

    def _count_dropped(self, run_id: str, n: int) -> None:
        if n:
            self.dropped += n
            self._dropped_by_run[run_id] = self._dropped_by_run.get(run_id, 0) + n

    def offer(self, event: Event) -> None:
        """Queue an event that is never dropped (run start and end, updates, artifacts).

        Behind a stalled sink, a run's updates merge into the one still queued (later
        values win) once more than ``_LIFECYCLE_LIMIT`` wait, and a heartbeat replaces the
        run's queued one: lifecycle traffic stays bounded.
        """
        if not self.accepting:
            return
        kind = type(event)
        with self._cond:
            if kind is RunUpdate or kind is Heartbeat:
                key = (event[0], kind)
                slot = self._slots.get(key)
                if slot is not None and (kind is Heartbeat
                                         or self._lifecycle >= _LIFECYCLE_LIMIT):
                    slot.event = _merge(slot.event, event)  # type: ignore[arg-type]
                    return
                self._slots[key] = slot = _Slot(event)  # type: ignore[arg-type]
                self._lifecycle += 1
                self._buf.append(slot)
            else:
                self._buf.append(event)
            self._cond.notify()

    def barrier(self, *, close: bool = False) -> Future[None]:
        """A future resolved once everything queued so far is delivered and flushed."""
        ack = _Ack(close)
        with self._cond:
            if not self.accepting or self._thread is None:
                ack.future.set_result(None)
                return ack.future
            self._buf.append(ack)
            self._cond.notify()
        return ack.future

    def abandon(self, run_id: str) -> None:
        """Drop and count every step and span of ``run_id`` the sink has not taken yet —
        queued, later in its current batch, or stuck in a hook — so the run can end.

        Called when a run's end found the sink behind (after waiting on a barrier).
        """
        if not self.accepting or self._thread is None:
            return
        with self._cond:
            kept: deque[Any] = deque()
            purged = 0
            for item in self._buf:
                if type(item) is list and item and item[0][0] == run_id:
                    purged += self._countable(item)
                    self._queued -= len(item)
                else:
                    kept.append(item)
            self._buf = kept
            batch, index = self._batch, self._index
            hooks = self._out.hooks
            for event in batch[index:]:
                kind = type(event)
                if (kind is Step or kind is Span) and event[0] == run_id \
                        and hooks[kind] is not None:
                    purged += 1
            if self._in_hook_since is not None and index < len(batch) \
                    and batch[index][0] == run_id and type(batch[index]) in (Step, Span):
                self._in_hook_dropped = True  # stuck in flight: never counted delivered
            self._abandoned.add(run_id)
            self._cond.notify_all()
        self._count_dropped(run_id, purged)

    def take_dropped(self, run_id: str) -> int:
        """This run's drop count so far (forgotten afterwards)."""
        return self._dropped_by_run.pop(run_id, 0)

    def stalled_for(self) -> float:
        """Seconds the sink has been inside one hook call (0 when not in one)."""
        since = self._in_hook_since
        return 0.0 if since is None else time.monotonic() - since

    def status(self) -> SinkStatus:
        """A cheap snapshot; safe from any thread."""
        detail = self._detail
        if detail is None and self.state is SinkState.AVAILABLE:
            stalled = self.stalled_for()
            detail = f"stalled in {self._out.hook} for {stalled:.1f}s" if stalled > 1.0 else None
            if detail is None:
                try:
                    detail = self.sink.detail()
                except Exception as exc:
                    detail = f"detail() failed: {describe(exc)}"
        last = self._out.last_error
        return SinkStatus(
            name=self.name, enabled=self.state is not SinkState.DISABLED,
            available=self.state is SinkState.AVAILABLE,
            detail=redact_text(detail if detail is not None else self.state.value),
            delivered=self.delivered, dropped=self.dropped, errors=self._out.errors,
            last_error=None if last is None else redact_text(last), queued=self._queued)

    # ------------------------------------------------------------------ worker side

    def _main(self) -> None:
        try:
            self.sink.open()
        except Exception as exc:
            logger.warning("sink unavailable", sink=self.name, reason=describe(exc))
            self._set_state(SinkState.UNAVAILABLE, describe(exc))
            return
        self._set_state(SinkState.AVAILABLE, None)
        while True:
            batch = self._take()
            if batch and self._deliver(batch):
                return

    def _take(self) -> list[Any]:
        """Up to ``_BATCH`` events off the queue, in order (waits up to the interval)."""
        events: list[Any] = []
        with self._cond:
            if not self._buf:
                self._cond.wait(self.sink.flush_interval_s)
            buf = self._buf
            while buf and len(events) < _BATCH:
                item = buf.popleft()
                kind = type(item)
                if kind is list:
                    events += item
                    self._queued -= len(item)
                elif kind is _Slot:
                    event = item.event
                    self._slots.pop((event[0], type(event)), None)
                    self._lifecycle -= 1
                    events.append(event)
                else:
                    events.append(item)
            if self._queued < self._high:
                self._may_block = True
            self._batch, self._index = events, 0
            self._cond.notify_all()  # a producer waiting for room
        return events

    def _deliver(self, batch: list[Any]) -> bool:
        """Run on the worker thread: hand events to hooks. Returns True once closed.

        The bookkeeping around each hook call holds the queue's lock (never the call
        itself), so :meth:`abandon` counts exactly what a run's end took from the sink.
        """
        out, cond, abandoned = self._out, self._cond, self._abandoned
        for index, event in enumerate(batch):
            kind = type(event)
            if kind is _Ack:
                out.call("flush", self.sink.flush)
                if event.close:
                    self._close_sink()
                event.future.set_result(None)
                if event.close:
                    return True
                continue
            with cond:
                self._index = index
                if abandoned and event[0] in abandoned:
                    if kind is Step or kind is Span:
                        continue  # counted as dropped by abandon()
                    if kind is RunEnd:
                        abandoned.discard(event[0])
                self._in_hook_since = time.monotonic()
            took = out.one(event)
            with cond:
                self._in_hook_since = None
                self._index = index + 1
                if self._in_hook_dropped:
                    self._in_hook_dropped = False
                elif took:
                    self.delivered += 1
        with cond:
            self._index = len(batch)
        out.call("flush", self.sink.flush)
        return False

    def _close_sink(self) -> None:
        self._out.end_unended("hub closed before the run ended")
        self._out.call("close", self.sink.close)
        try:  # what the sink last said (e.g. spans it could not export) stays visible
            last = self.sink.detail()
        except Exception:
            last = None
        self._set_state(SinkState.CLOSED, f"closed; {last}" if last else None)

    def _set_state(self, state: SinkState, detail: str | None) -> None:
        self.state = state
        self._detail = detail
        if state is not SinkState.AVAILABLE and state is not SinkState.OPENING:
            self._release_waiters()
        if not self.opened.done():
            self.opened.set_result(None)

    def _release_waiters(self) -> None:
        """Resolve every queued barrier so no caller waits on a sink that will not run."""
        with self._cond:
            items, self._queued = list(self._buf), 0
            self._buf.clear()
            self._slots.clear()
            self._cond.notify_all()
        for item in items:
            if type(item) is _Ack and not item.future.done():
                item.future.set_result(None)
