"""The hub: configuration, where each sink runs, and every run's lifecycle.

A hub splits its sinks in three: the run log (``jsonl``), which its :class:`Writer`
writes itself; sinks that run in the log directory's shipper process (MLflow,
OpenTelemetry), started through a :class:`ShipperLink`; and in-process sinks (console,
your own), each fed by its own worker. Runs hand their chunks to the writer; the hub
starts and ends them and answers ``status()`` — it never touches a run's internals.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import wait
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.to_thread

from . import _lifecycle
from . import environment_variables as ev
from ._daemon import ShipperLink
from ._events import RunEnd, RunStart, RunStatus
from ._exceptions import HubClosedError
from ._follow import size_of
from ._log import logger
from ._params import redact_text
from ._provenance import provenance_tags
from ._registry import build_sinks, selected_names
from ._run import DESCRIPTION_TAG, EXPERIMENT_TAG, Run, RunContext, check_run_id
from ._settings import Settings
from ._sink import Sink
from ._system import Sampler
from ._worker import SinkStatus, SinkWorker
from ._writer import Writer

DEFAULT_DIR = "rlobs-runs"
_REMEMBERED = 10_000  # ended runs whose shipping flush() can still wait for


def new_run_id() -> str:
    """A sortable, unique run id: ``YYYYmmdd-HHMMSS-<8 hex>``."""
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"


class Hub:
    """Writes run logs and fans run events out to sinks, each isolated from the others.

    Args:
        sinks: sink names (``"jsonl"``, ``"mlflow"``, …) and/or :class:`Sink` instances;
            ``None`` selects from the environment (``RLOBS_SINKS``).
        end_timeout_s: bound on waiting for in-process sinks at run end and close
            (``RLOBS_END_TIMEOUT_S``).
        open_timeout_s: bound on waiting for in-process sinks to open
            (``RLOBS_OPEN_TIMEOUT_S``).
        heartbeat_s: seconds between heartbeats, 0 disables (``RLOBS_HEARTBEAT_S``).
        system_metrics_s: seconds between system metrics samples, 0 disables
            (``RLOBS_SYSTEM_METRICS_S``; see :mod:`rlobs.environment_variables`).
        queue_size: default queue size per in-process sink (``RLOBS_QUEUE_SIZE``).
        handle_signals: install a SIGTERM handler that ends runs as ``killed``
            (``RLOBS_HANDLE_SIGNALS``).
        provenance: add reproducibility tags (versions, host, git) to every run.
        shipper: run the sinks that can in the log directory's shipper process
            (``RLOBS_SHIPPER``); ``False`` keeps every sink in this process.
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
        system_metrics_s: float | None = None,
        queue_size: int | None = None,
        handle_signals: bool | None = None,
        provenance: bool = True,
        shipper: bool | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = dict(os.environ if env is None else env)
        self.settings = Settings.from_env(
            env, end_timeout_s=end_timeout_s, open_timeout_s=open_timeout_s,
            heartbeat_s=heartbeat_s, queue_size=queue_size, handle_signals=handle_signals,
            shipper=shipper, system_metrics_s=system_metrics_s,
        )
        spec = selected_names(env) if sinks is None else sinks
        self.sinks = build_sinks(spec, env)
        self._provenance_on = provenance
        log = next((s for s in self.sinks if s.run_log), None)
        shipped = [s for s in self.sinks if self._ships(s)]
        local = [s for s in self.sinks if not s.run_log and s not in shipped]
        self.log_sink = log
        self.directory = _log_directory(log, env, bool(shipped))
        self._writer = Writer(
            self.directory, (), fsync=bool(getattr(log, "fsync", False)),
            mode=int(getattr(log, "mode", 0o600)), heartbeat_s=self.settings.heartbeat_s)
        self._workers = tuple(SinkWorker(s, queue_size=self.settings.queue_size,
                                         log_path=self._writer.path_for) for s in local)
        self._writer.workers = self._workers
        self._link = ShipperLink(self.directory, shipped) \
            if shipped and self.directory is not None else None
        if self._link is not None:  # a shipper that died (or gave way to a sync) comes back
            self._writer.tick = self._link.ensure
        wants_spans = self.directory is not None or any(s.wants_spans for s in local)
        self._context = RunContext(self._writer, wants_spans, self.settings.end_timeout_s,
                                   self._describe, self._opened, self._ended)
        self._runs: dict[str, Run] = {}
        self._done: dict[str, int] = {}  # ended run id → its log's size at the end
        self._lock = threading.RLock()
        self._state = "new"
        self._pid = os.getpid()
        self._system: Sampler | None = None

    def _ships(self, sink: Sink) -> bool:
        return (sink.shipper and not sink.run_log and sink.enabled
                and self.settings.shipper and sink.ship_env() is not None)

    @classmethod
    def from_env(cls, **kwargs: Any) -> Hub:
        """A hub configured by the environment (``RLOBS_SINKS`` and each sink's variables)."""
        return cls(None, **kwargs)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Hub:
        """Start the in-process sinks' workers (waiting, bounded, for them to open) and
        make sure the shipper runs. Idempotent; in a forked child it starts afresh.

        Raises:
            HubClosedError: the hub was closed.
        """
        with self._lock:
            self._check_pid()
            if self._state == "started":
                return self
            if self._state != "new":
                raise HubClosedError("this hub is closed; build a new Hub")
            for worker in self._workers:
                worker.start()
            wait([w.opened for w in self._workers], timeout=self.settings.open_timeout_s)
            if self._link is not None and not self._link.ensure():
                logger.warning("sinks not shipped", reason=self._link.spawn_error)
            self._state = "started"
            _lifecycle.register(self)
            self._start_sampler()
        return self

    def _start_sampler(self) -> None:
        interval = self.settings.system_metrics_s
        if interval <= 0:
            return
        if not Sampler.available():
            logger.info("system metrics off: psutil is not installed")
            return
        self._system = Sampler(interval, self._system_sample)
        self._system.start()

    def _system_sample(self, metrics: dict[str, float]) -> None:
        """Record a sample on each open run whose parent is not open here (a sweep's
        cells share their parent's host: one copy is enough)."""
        with self._lock:
            runs = [r for r in self._runs.values() if r.parent_id not in self._runs]
        for run in runs:
            run.log_summary(metrics)

    def close(self) -> None:
        """End open runs as ``killed``, close the in-process sinks, stop the writer.

        Bounded by ``end_timeout_s``: an in-process sink that hangs is abandoned. The
        shipper goes on shipping what the logs hold. Safe to call twice.
        """
        with self._lock:
            self._check_pid()
            if self._state != "started":
                self._state = "closed"
                return
            self._state = "closing"
        if self._system is not None:
            self._system.stop()
            self._system = None
        self.end_open_runs(RunStatus.KILLED, "the hub closed while the run was open")
        futures = {w.barrier(close=True): w for w in self._workers if w.accepting}
        _, pending = wait(futures, timeout=self.settings.end_timeout_s)
        for future in pending:
            logger.warning("sink abandoned at close", sink=futures[future].name,
                           timeout_s=self.settings.end_timeout_s)
        self._writer.close()
        with self._lock:
            self._state = "closed"
        _lifecycle.unregister(self)

    def _check_pid(self) -> None:
        """In a forked child, start afresh: no run and no in-process sink of the parent's
        (they stay with the parent; the child's own runs go to the log and the shipper)."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._runs.clear()
        self._done.clear()
        self._workers = ()
        self._system = None  # its thread stayed with the parent
        self._state = "new" if self._state == "started" else self._state

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
        experiment: str | None = None,
        description: str | None = None,
    ) -> Run:
        """A new run; it starts when entered (``with``/``async with``) or on ``start()``.

        Args:
            name: the run's name (a label: never used as a path).
            params: hyper-parameters; nested mappings are flattened to dotted keys.
            tags: free-form string tags.
            parent: the parent run (or its id) of a nested run, e.g. a sweep's cell.
            run_id: reuse an id (e.g. a restarted job); default a new unique id.
            experiment: the experiment the run belongs to (tag ``rlobs.experiment``;
                MLflow files the run there, before any sink or environment setting).
            description: a text describing the run (tag ``rlobs.description``; MLflow
                shows it as the run's description).

        Raises:
            HubClosedError: the hub is closed.
            InvalidRunId: ``run_id`` is not a safe file name.
        """
        if self.closed and self._pid == os.getpid():
            raise HubClosedError("this hub is closed; build a new Hub")
        parent_id = parent.run_id if isinstance(parent, Run) else parent
        if parent_id is not None:
            check_run_id(parent_id)
        extra = {key: value for key, value in ((EXPERIMENT_TAG, experiment),
                                               (DESCRIPTION_TAG, description)) if value}
        if extra:
            tags = {**(tags or {}), **extra}
        return Run(self._context, name, run_id=new_run_id() if run_id is None else run_id,
                   params=params, tags=tags, parent=parent_id)

    @property
    def log_directory(self) -> Path | None:
        """Where run logs go (``None``: this hub writes none)."""
        return self.directory

    def status(self) -> list[SinkStatus]:
        """A cheap snapshot per sink: the run log, in-process sinks, and the shipper's."""
        out = []
        if self.log_sink is not None:
            out.append(self._log_status(self.log_sink.name))
        out += [w.status() for w in self._workers]
        if self._link is not None:
            out += _shipper_statuses(self._link)
        return out

    def _log_status(self, name: str) -> SinkStatus:
        lost = self._writer.lost_bytes
        detail = f"writing to {self.directory}"
        if lost:
            detail += f"; the disk refused {lost} bytes"
        return SinkStatus(name=name, enabled=True, available=True, detail=detail,
                          delivered=self._writer.written, dropped=0, errors=int(lost > 0),
                          last_error="write failed" if lost else None,
                          queued=sum(len(rf.pending) for rf in self._writer.open_runs()))

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything recorded so far reached every sink — in-process ones,
        and the shipper's (which may be after this hub closed). True if all did in time.
        """
        self._check_pid()
        timeout = self.settings.end_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        if self._state == "started":
            self._writer.flush()
            futures = [w.barrier() for w in self._workers if w.accepting]
            _, pending = wait(futures, timeout=timeout)
            if pending:
                return False
        if self._link is None:
            return True
        sizes = dict(self._done)
        for run in list(self._runs.values()):
            if run.log_path is not None:
                sizes[run.run_id] = size_of(run.log_path)
        while not self._link.shipped(sizes):
            if time.monotonic() >= deadline:
                return False
            if not self._link.alive():
                self._link.ensure()
            time.sleep(0.05)
        return True

    def end_open_runs(self, status: RunStatus, error: str, *,
                      lock_wait_s: float | None = None) -> None:
        """End every open run of this hub with ``status`` (used by signals and exit).

        ``lock_wait_s`` bounds the wait for each run's locks (default ``end_timeout_s``);
        a signal handler passes a short one, as its own thread may hold one mid-step.
        """
        with self._lock:
            self._check_pid()
            runs = list(self._runs.values())
        ends = [(run, end) for run in runs if (end := run.finish(status, error, lock_wait_s))]
        for run, _ in ends:
            self._forget(run)
        self._await_taken([end for _, end in ends])

    # ------------------------------------------------------------------ runs' hooks

    def _describe(self, start: RunStart) -> RunStart:
        """A run's start as written: provenance tags, what each sink records."""
        self.start()
        if self.closed:
            raise HubClosedError("this hub is closed; build a new Hub")
        tags = {**provenance_tags(), **start.tags} if self._provenance_on else start.tags
        sinks: dict[str, Any] = {}
        for sink in self.sinks:
            try:
                context = sink.start_context(start)
            except Exception as exc:  # a plug-in's bug must not stop the run
                logger.warning("sink start_context failed", sink=sink.name,
                               error=redact_text(f"{type(exc).__name__}: {exc}"))
                continue
            if context:
                sinks[sink.name] = dict(context)
        digest = self._link.digest if self._link is not None else None
        return start._replace(tags=tags, sinks=sinks or None, shipper=digest)

    def _opened(self, run: Run) -> None:
        with self._lock:
            self._runs[run.run_id] = run
        if self._link is not None:
            self._link.ensure()  # a shipper that was about to exit may have missed it

    def _ended(self, run: Run, end: RunEnd) -> None:
        self._forget(run)
        self._await_taken([end])
        if self._link is not None:
            self._link.wait_detached(_DETACH_WAIT_S)

    def _forget(self, run: Run) -> None:
        with self._lock:
            self._runs.pop(run.run_id, None)
            if run.log_path is not None:
                self._done[run.run_id] = size_of(run.log_path)
                while len(self._done) > _REMEMBERED:
                    del self._done[next(iter(self._done))]

    def _await_taken(self, ends: list[RunEnd]) -> None:
        """Wait, bounded, until the in-process sinks took these ends and say nothing of
        those runs is pending."""
        if not ends or not self._workers:
            return
        bound = self.settings.end_timeout_s
        deadline = time.monotonic() + bound
        live = [w for w in self._workers if w.accepting and w.stalled_for() < bound]
        futures = {w.barrier(): w for w in live}
        _, late = wait(futures, timeout=bound)
        for future in late:
            logger.warning("sink did not take the run end in time", sink=futures[future].name,
                           runs=[e.run_id for e in ends], timeout_s=bound)
        for worker in live:
            for end in ends:
                while time.monotonic() < deadline:
                    with contextlib.suppress(Exception):
                        if worker.sink.delivery(end.run_id).pending <= 0:
                            break
                    time.sleep(0.02)

    def __repr__(self) -> str:
        names = ",".join(s.name for s in self.sinks) or "none"
        return f"<Hub sinks={names} {self._state}>"


_DETACH_WAIT_S = 1.0  # Python's start-up, at most, on a loaded machine


def _log_directory(log: Sink | None, env: Mapping[str, str], shipped: bool) -> Path | None:
    """The run log's directory: the ``jsonl`` sink's, else (the shipper needs the log as
    its transport) ``RLOBS_JSONL_DIR``; ``None`` when no log is wanted."""
    if log is not None:
        return Path(getattr(log, "directory", None) or env.get(ev.RLOBS_JSONL_DIR)
                    or DEFAULT_DIR)
    if shipped:
        return Path(env.get(ev.RLOBS_JSONL_DIR) or DEFAULT_DIR)
    return None


def _shipper_statuses(link: ShipperLink) -> list[SinkStatus]:
    """The shipped sinks as the shipper reports them (its status file)."""
    report = link.status() or {}
    alive = link.alive()
    runs = report.get("runs", {})
    out = []
    for sink in link.sinks:
        entry = report.get("sinks", {}).get(sink.name, {})
        unread = sum(r.get("sinks", {}).get(sink.name, {}).get("unread_bytes", 0)
                     for r in runs.values())
        lost = int(entry.get("lost", 0)) + sum(
            r.get("sinks", {}).get(sink.name, {}).get("lost", 0) for r in runs.values()
            if r.get("sinks", {}).get(sink.name, {}).get("state") in ("shipping", "ending"))
        if not alive and not report:
            detail = link.spawn_error or "shipper starting"
        elif not alive:
            detail = "shipper idle (exited; the next run starts it)"
        else:
            detail = entry.get("detail")
        out.append(SinkStatus(
            name=sink.name, enabled=True, available=bool(entry.get("available", alive)),
            detail=redact_text(str(detail)) if detail else None,
            delivered=int(entry.get("delivered", 0)), dropped=int(lost),
            errors=int(entry.get("errors", 0)), last_error=entry.get("last_error"),
            queued=int(unread), where="shipper"))
    return out


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
    experiment: str | None = None,
    description: str | None = None,
) -> Run:
    """Shortcut for ``default_hub().run(...)``: a run on the environment's sinks."""
    return default_hub().run(name, params=params, tags=tags, parent=parent, run_id=run_id,
                             experiment=experiment, description=description)
