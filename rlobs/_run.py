"""The run handle an agent loop holds: cheap, thread-safe hooks and a guaranteed end."""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import math
import threading
from collections.abc import Mapping
from os import PathLike, fspath
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from ._clock import _WALL_OFFSET_NS, _now_ns, wall_ns
from ._events import Artifact, Heartbeat, RunEnd, RunStart, RunStatus, RunUpdate, Span, Step
from ._log import logger
from ._params import clean_tags, flatten_params
from ._provenance import file_sha256
from ._span import _NULL_SPAN, SpanScope

if TYPE_CHECKING:
    from ._hub import Hub


_new_tuple = tuple.__new__
_CHUNK = 256  # steps and spans a run collects before handing them to the sinks' queues

_current_run: contextvars.ContextVar[Run | None] = contextvars.ContextVar(
    "rlobs_current_run", default=None
)


def current_run() -> Run | None:
    """The innermost run entered with ``with``/``async with`` in this context, if any."""
    return _current_run.get()


def status_for(exc: BaseException | None) -> tuple[RunStatus, str | None]:
    """The run status an exception leaving a run's block means.

    ``None`` → finished; ``Exception`` → failed; ``SystemExit(0)`` → finished, other
    ``SystemExit`` → failed; KeyboardInterrupt, cancellation and other
    ``BaseException`` → killed.
    """
    if exc is None:
        return RunStatus.FINISHED, None
    text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, SystemExit):
        ok = exc.code in (0, None)
        return (RunStatus.FINISHED, None) if ok else (RunStatus.FAILED, text)
    # No anyio.get_cancelled_exc_class() here: it raises outside an event loop (a plain
    # ``with run:``), and asyncio's and trio's cancellations are BaseExceptions anyway.
    if isinstance(exc, Exception):
        return RunStatus.FAILED, text
    return RunStatus.KILLED, text


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class Run:
    """One run of an agent; get it from :meth:`Hub.run`.

    Use it as a context manager (``with`` or ``async with``): it starts on entry and on
    exit ends ``finished``, ``failed`` (an exception) or ``killed`` (KeyboardInterrupt,
    cancellation, a signal). Every hook is safe from any thread or task and only
    enqueues.
    """

    def __init__(
        self,
        hub: Hub,
        name: str,
        *,
        run_id: str,
        params: Mapping[str, Any] | None,
        tags: Mapping[str, Any] | None,
        parent: Run | str | None,
    ) -> None:
        self._hub = hub
        self.name = name
        self.run_id = run_id
        self.parent_id = parent.run_id if isinstance(parent, Run) else parent
        self.params = flatten_params(params)
        self.tags = clean_tags(tags)
        # A plain Lock (an RLock costs ~0.1 µs more per step); _make_end never waits on it
        # unbounded, so a signal handler ending runs mid-step cannot deadlock.
        self._lock = threading.Lock()
        self._started = False
        self._end: RunEnd | None = None
        self._start_ns = 0
        self._steps = 0
        self._total = 0.0
        self._open = False  # started and not ended; the one flag a step reads
        self._episodes = 0
        self._ep_return = 0.0
        self._ep_first = 0  # index of the current episode's first step
        self._rejected = 0
        self._late = 0
        self._span_ids = itertools.count(1)
        self._pending: list[Any] = []  # step fields and spans; _lock; see Hub._hand_off
        self._tokens: list[contextvars.Token[Run | None]] = []

    # ------------------------------------------------------------------ state

    @property
    def steps(self) -> int:
        """Steps recorded so far."""
        return self._steps

    @property
    def total_reward(self) -> float:
        """Sum of step rewards so far."""
        return self._total

    @property
    def episodes(self) -> int:
        """Episodes completed so far (a step with ``done`` or ``truncated``)."""
        return self._episodes

    @property
    def result(self) -> RunEnd | None:
        """The run's end event once it ended, else ``None``."""
        return self._end

    @property
    def wants_spans(self) -> bool:
        """Whether any sink takes spans (instrumentation can skip timing when not)."""
        return bool(self._hub._span_workers)

    @property
    def active(self) -> bool:
        """Started and not ended."""
        return self._open

    # ------------------------------------------------------------------ hooks

    def start(self) -> Run:
        """Start the run (``with`` does this). Starting twice is a no-op."""
        with self._lock:
            if self._started:
                return self
            self._started = self._open = True
            self._start_ns = wall_ns()
            tags = {**self._hub._provenance(), **self.tags}
            event = RunStart(self.run_id, self.name, self.params, tags, self.parent_id,
                             self._start_ns)
            self._hub._open_run(self, event)
        return self

    def step(
        self,
        reward: float = 0.0,
        metrics: Mapping[str, float] | None = None,
        *,
        done: bool = False,
        truncated: bool = False,
    ) -> None:
        """Record one agent step. Non-blocking, a few µs.

        Args:
            reward: the step's reward; anything ``float()`` accepts (numpy, 0-d tensors).
            metrics: extra scalar metrics; values that are not numbers are dropped from
                the step, counted in ``RunEnd.rejected`` and logged once per key.
            done: the episode terminated at this step.
            truncated: the episode was cut off at this step (time limit).
        """
        if type(reward) is not float:
            reward = self._coerce_reward(reward)
        # A copy (the caller may reuse its dict), checked later, off this thread where it
        # can be: see _events.
        clean = dict(metrics) if metrics else {}
        lock = self._lock
        lock.acquire()  # explicit acquire/release: ~0.1 µs cheaper than `with` per step
        try:
            if not self._open:
                self._late += 1
                return
            index = self._steps
            self._steps = index + 1
            total = self._total = self._total + reward
            ep_return = self._ep_return = self._ep_return + reward
            episode = self._episodes
            if done or truncated:
                self._episodes = episode + 1
                ep_len: int | None = index + 1 - self._ep_first
                self._ep_return, self._ep_first = 0.0, index + 1
            else:
                ep_return = ep_len = None  # type: ignore[assignment]
            pending = self._pending
            # A step's fields as a plain tuple: the hub makes it a Step off this thread.
            pending.append((self.run_id, index, reward, total, clean, done, truncated,
                            episode, ep_return, ep_len, _now_ns() + _WALL_OFFSET_NS))
            if len(pending) >= _CHUNK:
                self._ship()
        finally:
            lock.release()

    def span(self, name: str, **attributes: Any) -> SpanScope:
        """Time a block as a span of the current step: ``with run.span("actor.forward"):``.

        When no sink wants spans this returns a shared no-op scope (tens of ns).
        """
        if not self._hub._span_workers:
            return _NULL_SPAN
        return SpanScope(self, name, attributes)

    def record_span(
        self,
        name: str,
        start_ns: int,
        end_ns: int,
        attributes: Mapping[str, Any] | None = None,
        *,
        error: str | None = None,
        parent_span_id: int | None = None,
    ) -> int:
        """Record an already-timed span (times from :func:`rlobs.wall_ns`); returns its id."""
        if not self._hub._span_workers or self._end is not None:
            return 0
        span_id = next(self._span_ids)
        self._add_span(name, start_ns, end_ns, attributes or {}, span_id, parent_span_id, error)
        return span_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Add params (nested mappings are flattened to dotted keys)."""
        self._update(params=flatten_params(params))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Add or change tags."""
        self._update(tags=clean_tags(tags))

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        """Record run-level (step-less) metrics, e.g. an evaluation's final scores."""
        self._update(metrics=self._clean_metrics(metrics))

    def log_artifact(self, path: str | PathLike[str], artifact_path: str | None = None) -> None:
        """Attach a file or directory; sinks that store files copy it."""
        resolved = Path(fspath(path)).resolve()
        if not resolved.exists():
            raise FileNotFoundError(f"artifact not found: {resolved}")
        self._emit(Artifact(self.run_id, str(resolved), artifact_path, wall_ns()))

    def log_input_hash(self, path: str | PathLike[str], name: str | None = None) -> str:
        """Hash a dataset file or directory (SHA-256) and tag the run with it.

        Returns:
            The hex digest, also set as tag ``rlobs.input.<name>.sha256``.
        """
        digest = file_sha256(path)
        label = name or Path(fspath(path)).name
        self._update(tags={f"rlobs.input.{label}.sha256": digest,
                           f"rlobs.input.{label}.path": str(Path(fspath(path)).resolve())})
        return digest

    def end(self, status: RunStatus | str = RunStatus.FINISHED,
            error: str | None = None) -> RunEnd | None:
        """End the run (``with`` does this); waits, bounded, until the sinks took it.

        Ending twice is harmless and returns the first end. Returns ``None`` if the run
        never started.
        """
        event = self._make_end(RunStatus(status), error)
        if event is not None:
            self._hub._close_runs([(self, event)])
        return self._end

    # ------------------------------------------------------------------ internals

    def _add_span(self, name: str, start_ns: int, end_ns: int, attributes: Mapping[str, Any],
                  span_id: int, parent_span_id: int | None, error: str | None) -> None:
        """Queue a span of the current step, in order with the steps around it."""
        with self._lock:
            if not self._open:
                return
            pending = self._pending
            pending.append(_new_tuple(Span, (self.run_id, name, self._steps, start_ns, end_ns,
                                             attributes, span_id, parent_span_id, error)))
            if len(pending) >= _CHUNK:
                self._ship()

    def _ship(self, *, block: bool = True) -> None:
        """Hand the pending chunk of steps and spans to the hub (``_lock`` held)."""
        batch = self._pending
        if batch:
            self._pending = []
            self._hub._hand_off(self, batch, block=block)

    def _send_pending(self, *, block: bool = True) -> None:
        """Put everything stepped so far in the sinks' queues (``_lock`` held), so the
        lifecycle event the caller queues next comes after it."""
        self._ship(block=block)
        self._hub._drain(block=block)

    def _collect(self) -> None:
        """Ship a quiet run's partial chunk from the hub's loop thread, never waiting."""
        if self._pending and self._lock.acquire(blocking=False):
            try:
                self._ship(block=False)
            finally:
                self._lock.release()

    def _events(self, batch: list[Any]) -> list[Step | Span]:
        """A handed-off chunk as events: steps built from their fields, metrics checked.

        The hub calls this when it moves a chunk to the sinks' queues — on its own loop
        thread unless a producer is far ahead — so a step itself only copies its metrics.
        Metrics become ``str`` → ``float``/``int`` before any sink sees them.
        """
        events: list[Step | Span] = []
        append = events.append
        for fields in batch:
            if fields.__class__ is tuple:
                for key, value in fields[4].items():
                    if (type(value) is not float and type(value) is not int) \
                            or type(key) is not str:
                        fields = (*fields[:4], self._clean_metrics(fields[4]), *fields[5:])
                        break
                # tuple.__new__ skips the NamedTuple's Python-level __new__ (~0.2 µs).
                fields = _new_tuple(Step, fields)
            append(fields)
        return events

    def _make_end(self, status: RunStatus, error: str | None,
                  lock_wait_s: float | None = None) -> RunEnd | None:
        """Build the run's end once, after handing its last chunk over.

        Waits at most ``lock_wait_s`` (default ``end_timeout_s``) for the run's lock, then
        goes on without it: a signal handler may run while its own thread holds it.
        """
        wait_s = self._hub.settings.end_timeout_s if lock_wait_s is None else lock_wait_s
        locked = self._lock.acquire(timeout=wait_s)
        try:
            if not self._started or self._end is not None:
                return None
            self._send_pending()  # everything stepped before the end goes ahead of it
            self._open = False
            now = wall_ns()
            dropped = {w.name: n for w in self._hub._workers
                       if (n := w.take_dropped(self.run_id))}
            self._end = RunEnd(self.run_id, status, self._steps, self._total, self._episodes,
                               (now - self._start_ns) / 1e9, error, dropped, self._rejected,
                               now)
            return self._end
        finally:
            if locked:
                self._lock.release()

    def _heartbeat(self) -> None:
        """Called on the hub's loop thread, which must never wait for a run's lock."""
        if not self.active:
            return
        locked = self._lock.acquire(blocking=False)
        try:
            if locked:  # else a producer is stepping right now: the run is plainly alive
                self._send_pending(block=False)
            event = Heartbeat(self.run_id, self._steps, wall_ns())
            for worker in self._hub._lifecycle_workers():
                worker.offer_lifecycle(event, wake=False)
        finally:
            if locked:
                self._lock.release()

    def _update(self, *, params: Mapping[str, Any] | None = None,
                tags: Mapping[str, str] | None = None,
                metrics: Mapping[str, float] | None = None) -> None:
        self._emit(RunUpdate(self.run_id, params or {}, tags or {}, metrics or {}, wall_ns()))

    def _emit(self, event: RunUpdate | Artifact) -> None:
        with self._lock:
            if not self.active:
                self._late += 1
                return
            self._send_pending()
            for worker in self._hub._lifecycle_workers():
                worker.offer_lifecycle(event)

    def _coerce_reward(self, reward: Any) -> float:
        value = _number(reward)
        if value is None:
            self._reject("reward", reward)
            return math.nan
        return value

    def _clean_metrics(self, metrics: Mapping[Any, Any]) -> dict[str, float]:
        clean: dict[str, float] = {}
        for key, value in metrics.items():
            self._coerce_metric(clean, key, value)
        return clean

    def _coerce_metric(self, out: dict[str, float], key: Any, value: Any) -> None:
        number = _number(value)
        if number is None:
            self._reject(str(key), value)
        else:
            out[str(key)] = number

    def _reject(self, key: str, value: Any) -> None:
        self._rejected += 1
        if self._rejected & (self._rejected - 1) == 0:
            logger.warning("value is not a number; not recorded", run=self.name, key=key,
                           value_type=type(value).__name__, rejected=self._rejected)

    # ------------------------------------------------------------------ context managers

    def __enter__(self) -> Run:
        self.start()
        self._tokens.append(_current_run.set(self))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._reset_current()
        self.end(*status_for(exc))

    async def __aenter__(self) -> Run:
        await anyio.to_thread.run_sync(self.start)
        self._tokens.append(_current_run.set(self))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self._reset_current()
        status, error = status_for(exc)
        with anyio.CancelScope(shield=True):  # cleanup survives the caller's cancellation
            await anyio.to_thread.run_sync(self.end, status, error)

    def _reset_current(self) -> None:
        if self._tokens:
            # ValueError: exited in another context than entered; nothing to undo there.
            with contextlib.suppress(ValueError):
                _current_run.reset(self._tokens.pop())

    def __repr__(self) -> str:
        state = "ended" if self._end else ("active" if self._started else "new")
        return f"<Run {self.name!r} id={self.run_id} {state} steps={self._steps}>"
