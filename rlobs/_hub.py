"""The hub: owns the sinks' workers, their event loop, and every run's lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures import wait
from types import TracebackType
from typing import Any

import anyio
import anyio.to_thread
from anyio.from_thread import BlockingPortal, start_blocking_portal

from . import _lifecycle
from ._events import Event, RunEnd, RunStart, RunStatus, Span
from ._exceptions import HubClosedError, RlobsError
from ._log import logger
from ._provenance import provenance_tags
from ._reader import RunLog
from ._registry import build_sinks, selected_names
from ._run import Run
from ._settings import Settings
from ._sink import Sink
from ._worker import SinkStatus, SinkWorker

_OUTBOX_LIMIT = 64  # chunks the loop may fall behind before a producer drains them


def new_run_id() -> str:
    """A sortable, unique run id: ``YYYYmmdd-HHMMSS-<8 hex>``."""
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"


class Hub:
    """Fans run events out to sinks, each behind its own bounded queue and worker.

    Args:
        sinks: sink names (``"jsonl"``, ``"mlflow"``, …) and/or :class:`Sink` instances;
            ``None`` selects from the environment (``RLOBS_SINKS``).
        end_timeout_s: bound on waiting for sinks at run end and close
            (``RLOBS_END_TIMEOUT_S``).
        open_timeout_s: bound on waiting for sinks to open (``RLOBS_OPEN_TIMEOUT_S``).
        heartbeat_s: seconds between heartbeats, 0 disables (``RLOBS_HEARTBEAT_S``).
        queue_size: default queue size per sink (``RLOBS_QUEUE_SIZE``).
        handle_signals: install a SIGTERM handler that ends runs as ``killed``
            (``RLOBS_HANDLE_SIGNALS``).
        provenance: add reproducibility tags (versions, host, git) to every run.
        env: environment to read instead of ``os.environ``.

    Raises:
        UnknownSinkError: a sink name is not registered.
        ConfigError: a sink's configuration is invalid.
    """

    def __init__(
        self,
        sinks: Iterable[str | Sink] | None = None,
        *,
        end_timeout_s: float | None = None,
        open_timeout_s: float | None = None,
        heartbeat_s: float | None = None,
        queue_size: int | None = None,
        handle_signals: bool | None = None,
        provenance: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = dict(os.environ if env is None else env)
        self.settings = Settings.from_env(
            env, end_timeout_s=end_timeout_s, open_timeout_s=open_timeout_s,
            heartbeat_s=heartbeat_s, queue_size=queue_size, handle_signals=handle_signals,
        )
        spec = selected_names(env) if sinks is None else sinks
        self.sinks = build_sinks(spec, env)
        self._provenance_on = provenance
        self._workers = tuple(
            SinkWorker(s, queue_size=self.settings.queue_size, on_state=self._route,
                       collect=self._collect)
            for s in self.sinks
        )
        self._step_workers: tuple[SinkWorker, ...] = ()
        self._span_workers: tuple[SinkWorker, ...] = ()
        self._runs: dict[str, Run] = {}
        self._outbox: deque[tuple[Run, list[Any]]] = deque()
        self._ship_lock = threading.RLock()  # RLock: a signal handler may end runs mid-drain
        self._drain_wanted = False
        self._held_since: float | None = None  # when the loop first held a chunk back
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.RLock()
        self._state = "new"
        self._portal: BlockingPortal | None = None
        self._portal_cm: contextlib.AbstractContextManager[BlockingPortal] | None = None

    @classmethod
    def from_env(cls, **kwargs: Any) -> Hub:
        """A hub configured by the environment (``RLOBS_SINKS`` and each sink's variables)."""
        return cls(None, **kwargs)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Hub:
        """Start the workers and wait (bounded) for every sink to open. Idempotent.

        Raises:
            HubClosedError: the hub was closed.
        """
        with self._lock:
            if self._state == "started":
                return self
            if self._state != "new":
                raise HubClosedError("this hub is closed; build a new Hub")
            # The hub's own loop always runs anyio's asyncio backend (the workers rely on
            # it); the user's code may run on any backend.
            self._portal_cm = start_blocking_portal("asyncio", name="rlobs-hub")
            self._portal = portal = self._portal_cm.__enter__()
            self._loop = portal.call(asyncio.get_running_loop)
            for worker in self._workers:
                portal.start_task_soon(worker.serve, self.settings.open_timeout_s)
            if self.settings.heartbeat_s > 0:
                portal.start_task_soon(self._heartbeats)
            self._route()
            wait([w.opened for w in self._workers], timeout=self.settings.open_timeout_s + 1)
            self._state = "started"
            _lifecycle.register(self)
        return self

    def close(self) -> None:
        """End open runs as ``killed``, flush and close every sink, stop the loop.

        Bounded by ``end_timeout_s``: a sink that hangs is abandoned. Safe to call twice.
        """
        with self._lock:
            if self._state != "started":
                self._state = "closed"
                return
            self._state = "closing"
        self.end_open_runs(RunStatus.KILLED, "the hub closed while the run was open")
        bound = self.settings.end_timeout_s
        # Every sink gets one more bounded chance to flush and close, even one that was
        # slow over a run's end: its close is where buffered data goes out.
        futures = {w.barrier(close=True): w for w in self._workers if w.accepting}
        _, pending = wait(futures, timeout=bound)
        for future in pending:
            logger.warning("sink abandoned at close", sink=futures[future].name,
                           timeout_s=self.settings.end_timeout_s)
        self._stop_loop()
        with self._lock:
            self._state = "closed"
        _lifecycle.unregister(self)

    def _stop_loop(self) -> None:
        portal, cm = self._portal, self._portal_cm
        self._portal = self._portal_cm = None
        if portal is None or cm is None:
            return
        with contextlib.suppress(RuntimeError):
            portal.call(portal.stop, True)  # cancels workers stuck in a hung sink
        cm.__exit__(None, None, None)

    def _forget_after_fork(self) -> None:
        """In a forked child the loop thread does not exist: drop everything silently."""
        self._state = "closed"
        self._portal = self._portal_cm = self._loop = None
        self._runs.clear()
        self._outbox.clear()
        self._ship_lock = threading.RLock()

    @property
    def closed(self) -> bool:
        """Whether the hub was closed."""
        return self._state in ("closing", "closed")

    def __enter__(self) -> Hub:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Hub:
        await anyio.to_thread.run_sync(self.start)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.close)

    # ------------------------------------------------------------------ runs

    def run(
        self,
        name: str,
        *,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        parent: Run | str | None = None,
        run_id: str | None = None,
    ) -> Run:
        """A new run; it starts when entered (``with``/``async with``) or on ``start()``.

        Args:
            name: the run's name; its family (the part before the first ``-``, ``/`` or
                ``:``) groups runs, e.g. into an MLflow experiment.
            params: hyper-parameters; nested mappings are flattened to dotted keys.
            tags: free-form string tags.
            parent: the parent run (or its id) of a nested run, e.g. a sweep's cell.
            run_id: reuse an id (e.g. a restarted job); default a new unique id.

        Raises:
            HubClosedError: the hub is closed.
        """
        if self.closed:
            raise HubClosedError("this hub is closed; build a new Hub")
        return Run(self, name, run_id=run_id or new_run_id(), params=params, tags=tags,
                   parent=parent)

    def status(self) -> list[SinkStatus]:
        """A cheap snapshot per sink: availability, detail and counters."""
        return [w.status() for w in self._workers]

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every event queued so far reached its sink. True if all did in time."""
        if self._state != "started":
            return True
        for run in self._open_runs():
            with run._lock:
                run._send_pending()
        futures = [w.barrier() for w in self._workers if w.accepting]
        _, pending = wait(futures, timeout=timeout_s or self.settings.end_timeout_s)
        return not pending

    def replay(self, log: RunLog, *, chunk: int = 8192) -> RunEnd:
        """Re-send a recorded run to this hub's sinks unchanged (ids, steps, timestamps).

        Nothing is dropped: events go out in chunks, each waiting until every sink took
        it. A log with no recorded end (the process died) is ended ``killed``. Sinks that
        keep remote state (MLflow) skip what they already hold, so replay is idempotent.

        Returns:
            The run's end event (the recorded one, or the one replay made).

        Raises:
            RlobsError: a sink stalled for ``max(60, end_timeout_s)`` seconds.
        """
        self.start()
        events: list[Event] = list(log.events)
        end = log.end or _end_of_dead_run(log)
        if log.end is None:
            events.append(end)
        workers = self._lifecycle_workers()
        bound = max(60.0, self.settings.end_timeout_s)
        for first in range(0, len(events), chunk):
            for event in events[first:first + chunk]:
                for worker in workers:
                    if type(event) is not Span or worker.sink.wants_spans:
                        worker.offer_lifecycle(event, wake=False)
            futures = {w.barrier(): w for w in workers}
            _, pending = wait(futures, timeout=bound)
            if pending:
                names = ", ".join(futures[f].name for f in pending)
                raise RlobsError(f"replay stalled: {names} took nothing for {bound:g}s")
        return end

    def end_open_runs(self, status: RunStatus, error: str, *,
                      lock_wait_s: float | None = None) -> None:
        """End every open run of this hub with ``status`` (used by signals and exit).

        ``lock_wait_s`` bounds the wait for each run's lock (default ``end_timeout_s``);
        a signal handler passes a short one, as its own thread may hold a lock mid-step.
        """
        runs = self._open_runs()
        ends = [(run, end) for run in runs
                if (end := run._make_end(status, error, lock_wait_s))]
        self._close_runs(ends)

    # ------------------------------------------------------------------ used by Run

    def _open_runs(self) -> list[Run]:
        with self._lock:
            return list(self._runs.values())

    def _collect(self) -> None:
        """On the loop thread, before a worker drains: move quiet runs' chunks along too."""
        for run in list(self._runs.values()):  # one C-level copy: no lock, never waits
            run._collect()
        self._drain(block=False)

    def _hand_off(self, run: Run, batch: list[Any], *, block: bool) -> None:
        """Take a run's chunk (its lock held); the loop moves it to the sinks' queues.

        The producer only appends and, once per chunk, wakes the loop. It drains the
        outbox itself only when the loop is ``_OUTBOX_LIMIT`` chunks behind: that is where
        a sink declaring ``Overflow.BLOCK`` makes a fast producer wait.
        """
        if not self._step_workers:
            return  # no sink takes steps
        outbox = self._outbox
        outbox.append((run, batch))
        if not block:
            return  # the loop thread itself: it drains next
        if len(outbox) >= _OUTBOX_LIMIT:
            self._drain(block=True)
        elif not self._drain_wanted:
            self._drain_wanted = True
            try:
                self._loop.call_soon_threadsafe(self._drain_soon)  # type: ignore[union-attr]
            except (AttributeError, RuntimeError):  # the loop is gone: close takes over
                self._drain_wanted = False

    def _drain_soon(self) -> None:
        self._drain_wanted = False
        self._drain(block=False)

    def _drain(self, *, block: bool) -> None:
        """Move handed-off chunks, in order, to every live sink's queue.

        With ``block`` unset (the loop thread, which must never wait) a chunk that would
        make a full ``Overflow.BLOCK`` sink wait is held back, but no longer than that
        sink's ``block_timeout_s`` — what a producer would have waited — so a stuck sink
        does not starve the others.
        """
        lock = self._ship_lock
        if not lock.acquire(blocking=block):
            return
        try:
            outbox = self._outbox
            while outbox:
                run, batch = outbox[0]
                workers = self._step_workers
                if not block and self._hold_back(workers, len(batch)):
                    return
                outbox.popleft()
                events = run._events(batch)
                for worker in workers:
                    worker.offer_batch(events, run.run_id, block=block)
        finally:
            lock.release()

    def _hold_back(self, workers: tuple[SinkWorker, ...], n: int) -> bool:
        full = [w for w in workers if w.would_block(n)]
        if not full:
            self._held_since = None
            return False
        now = time.monotonic()
        if self._held_since is None:
            self._held_since = now
        if now - self._held_since < max(w.sink.block_timeout_s for w in full):
            return True
        for worker in full:
            worker.stop_blocking()
        self._held_since = None
        return False

    def _provenance(self) -> dict[str, str]:
        return provenance_tags() if self._provenance_on else {}

    def _open_run(self, run: Run, event: RunStart) -> None:
        self.start()
        with self._lock:
            if self.closed:
                raise HubClosedError("this hub is closed; build a new Hub")
            self._runs[run.run_id] = run
        for worker in self._lifecycle_workers():
            worker.offer_lifecycle(event)

    def _close_runs(self, ends: list[tuple[Run, RunEnd]]) -> None:
        """Queue each run's end to its sinks and wait, bounded, until they took it."""
        if not ends:
            return
        workers = self._lifecycle_workers()
        for _, event in ends:
            for worker in workers:
                worker.offer_lifecycle(event, wake=False)
        bound = self.settings.end_timeout_s
        futures = {w.barrier(): w for w in workers if w.stalled_for() < bound}
        _, pending = wait(futures, timeout=bound)
        for future in pending:
            logger.warning("sink did not take the run end in time", sink=futures[future].name,
                           runs=[run.name for run, _ in ends], timeout_s=bound)
        with self._lock:
            for run, _ in ends:
                self._runs.pop(run.run_id, None)

    def _lifecycle_workers(self) -> tuple[SinkWorker, ...]:
        """Workers that take events now: the ones ``_route`` keeps current."""
        return self._step_workers

    def _route(self) -> None:
        """Recompute which workers take events and spans (called on every state change)."""
        live = tuple(w for w in self._workers if w.accepting)
        self._step_workers = live
        self._span_workers = tuple(w for w in live if w.sink.wants_spans)

    async def _heartbeats(self) -> None:
        while True:
            await anyio.sleep(self.settings.heartbeat_s)
            for run in list(self._runs.values()):
                run._heartbeat()

    def __repr__(self) -> str:
        names = ",".join(w.name for w in self._workers) or "none"
        return f"<Hub sinks={names} {self._state}>"


def _end_of_dead_run(log: RunLog) -> RunEnd:
    steps = log.steps
    return RunEnd(
        run_id=log.start.run_id, status=RunStatus.KILLED, steps=len(steps),
        total_reward=steps[-1].cumulative_reward if steps else 0.0,
        episodes=sum(1 for s in steps if s.episode_return is not None),
        duration_s=(log.last_seen_ns - log.start.time_ns) / 1e9,
        error="no end recorded: the process died (ended by replay)", dropped={}, rejected=0,
        time_ns=log.last_seen_ns,
    )


_default_lock = threading.Lock()
_default: Hub | None = None


def default_hub() -> Hub:
    """The process-wide hub built from the environment (started on first use)."""
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            _default = Hub.from_env()
        hub = _default
    return hub.start()


def run(
    name: str,
    *,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    parent: Run | str | None = None,
    run_id: str | None = None,
) -> Run:
    """Shortcut for ``default_hub().run(...)``: a run on the environment's sinks."""
    return default_hub().run(name, params=params, tags=tags, parent=parent, run_id=run_id)


def _reset_default_after_fork() -> None:
    global _default
    _default = None


os.register_at_fork(after_in_child=_reset_default_after_fork)
