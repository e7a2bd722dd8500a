"""The run handle an agent loop holds: cheap, thread-safe hooks and a guaranteed end."""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import math
import os
import re
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from os import PathLike, fspath
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.to_thread

from ._clock import _WALL_OFFSET_NS, _now_ns, wall_ns
from ._codec import SpanLine, StepLine
from ._events import Artifact, RunEnd, RunStart, RunStatus, RunUpdate, Step
from ._exceptions import InvalidRunId
from ._llm import KIND, KINDS
from ._log import logger
from ._params import clean_attributes, clean_tags, flatten_params, redact_text
from ._provenance import file_sha256
from ._settings import env_bool, env_int
from ._span import NULL_SPAN, SpanScope, current_span_id
from ._traceids import TraceIds
from ._values import as_number
from ._writer import BACKLOG, RunFile, Writer
from .environment_variables import RLOBS_OTEL_CONTEXT

EXPERIMENT_TAG = "rlobs.experiment"
"""Tag naming the experiment a run belongs to (``Hub.run(experiment=…)``)."""
DESCRIPTION_TAG = "rlobs.description"
"""Tag holding a run's description (``Hub.run(description=…)``)."""
KIND_TAG = "rlobs.kind"
"""Tag saying what made a run: ``result`` for :func:`rlobs.log_result` (no agent loop)."""

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_UNSET: Any = object()
_ZERO, _ONE = 0, 1  # Run.step's defaults, compared by identity (small ints are shared)

_current_run: contextvars.ContextVar[Run | None] = contextvars.ContextVar(
    "rlobs_current_run", default=None
)


def current_run() -> Run | None:
    """The innermost run entered with ``with``/``async with`` in this context, if any."""
    return _current_run.get()


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is a safe file name, else a clear error.

    Raises:
        InvalidRunId: not 1–200 of ``A-Z a-z 0-9 . _ -``, starting with a letter or digit.
    """
    if not isinstance(run_id, str) or _SAFE_ID.fullmatch(run_id) is None:
        raise InvalidRunId(f"run_id {run_id!r} is not a safe file name: use 1-200 letters, "
                           "digits, '.', '_' or '-', starting with a letter or digit")
    return run_id


def status_for(exc: BaseException | None) -> tuple[RunStatus, str | None]:
    """The run status an exception leaving a run's block means.

    ``None`` → finished; ``Exception`` → failed; ``SystemExit(0)`` → finished, other
    ``SystemExit`` → failed; KeyboardInterrupt, cancellation and other
    ``BaseException`` → killed.
    """
    if exc is None:
        return RunStatus.FINISHED, None
    text = redact_text(f"{type(exc).__name__}: {exc}".rstrip(": "))
    if isinstance(exc, SystemExit):
        ok = exc.code in (0, None)
        return (RunStatus.FINISHED, None) if ok else (RunStatus.FAILED, text)
    # No anyio.get_cancelled_exc_class() here: it raises outside an event loop (a plain
    # ``with run:``), and asyncio's and trio's cancellations are BaseExceptions anyway.
    if isinstance(exc, Exception):
        return RunStatus.FAILED, text
    return RunStatus.KILLED, text


@dataclass(frozen=True, eq=False)
class RunContext:
    """What a run needs from its hub, handed over explicitly (it never reaches back).

    - ``writer``: writes the run's log and feeds the in-process sinks.
    - ``wants_spans``: whether any sink takes spans.
    - ``end_timeout_s``: bound on waiting for locks and in-process sinks at the end.
    - ``describe``: completes a run's start (provenance tags, what sinks record).
    - ``opened`` / ``ended``: the hub's bookkeeping, called after start and end.
    """

    writer: Writer
    wants_spans: bool
    end_timeout_s: float
    describe: Callable[[RunStart], RunStart]
    opened: Callable[[Run], None]
    ended: Callable[[Run, RunEnd], None]


class Run:
    """One run of an agent; get it from :meth:`Hub.run`.

    Use it as a context manager (``with`` or ``async with``): it starts on entry and on
    exit ends ``finished``, ``failed`` (an exception) or ``killed`` (KeyboardInterrupt,
    cancellation, a signal). Every hook is safe from any thread or task, only appends,
    and never raises into the agent loop: bad values are coerced or counted.
    """

    def __init__(self, context: RunContext, name: str, *, run_id: str,
                 params: Mapping[str, Any] | None, tags: Mapping[str, Any] | None,
                 parent: Run | str | None) -> None:
        self._ctx = context
        self.name = str(name)
        self.run_id = check_run_id(run_id)
        self.parent_id = parent.run_id if isinstance(parent, Run) else parent
        self._parent_run = parent if isinstance(parent, Run) else None
        self._ids: TraceIds | None = None
        self.params = flatten_params(params)
        self.tags = clean_tags(tags)
        # Re-entrant: a signal handler that ends the run runs on the thread it interrupted,
        # maybe mid-step holding this lock, and must take it without waiting (~10 ns a step
        # over a plain Lock). Every other wait on it outside the hot path is bounded.
        self._lock = threading.RLock()
        self._pending: list[Any] = []  # step fields and spans, until the writer takes them
        self._file: RunFile | None = None
        self._started = False
        self._end: RunEnd | None = None
        self._start_ns = 0
        self._steps = 0
        self._total = 0.0
        self._open = False  # started, not ended, and in the process that started it
        self._episodes = 0
        self._ep_return = 0.0
        self._ep_first = 0  # index of the current episode's first step
        self._rejected = 0
        self._ignored = 0
        self._forked = False
        self._count_lock = threading.Lock()
        self._next_span_id = itertools.count(1).__next__
        self._tokens: list[contextvars.Token[Run | None]] = []
        self._otel_tokens: list[Any] = []
        self._llm_step: dict[str, float] = {}  # LLM usage since the last step (the lock's)
        self._llm_total: dict[str, float] = {}
        _runs.add(self)

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
    def rejected(self) -> int:
        """Values left out because they were not numbers (see docs/core.md)."""
        return self._rejected

    @property
    def ignored(self) -> int:
        """Hook calls ignored because the run was not open (before start, after end, or
        in a forked child of the process that started it)."""
        return self._ignored

    @property
    def result(self) -> RunEnd | None:
        """The run's end event once it ended, else ``None``."""
        return self._end

    @property
    def wants_spans(self) -> bool:
        """Whether any sink takes spans (instrumentation can skip timing when not)."""
        return self._ctx.wants_spans

    @property
    def active(self) -> bool:
        """Started and not ended."""
        return self._open

    def _parent_key(self) -> str | None:
        """The trace of the parent run: its own if it is a run here, else its id (a run
        of another process is taken for the root of its trace)."""
        if self._parent_run is not None:
            return self._parent_run.trace_ids.trace_key
        return self.parent_id

    @property
    def trace_ids(self) -> TraceIds:
        """The OpenTelemetry ids the ``otel`` sink gives this run's spans (see
        :class:`rlobs.TraceIds`); final once the run started."""
        if self._ids is None:
            return TraceIds.of(self.run_id, None, self._parent_key())
        return self._ids

    @property
    def span_sampling(self) -> tuple[int, int]:
        """``(first, every)``: which steps' spans the ``otel`` sink keeps by default
        (``RLOBS_OTEL_STEP_SPANS``, ``RLOBS_OTEL_STEP_EVERY``)."""
        return (env_int("RLOBS_OTEL_STEP_SPANS", 1000), env_int("RLOBS_OTEL_STEP_EVERY", 100))

    @property
    def current_span_id(self) -> int | None:
        """The id of this run's innermost span open in the calling task or thread."""
        return current_span_id(self._next_span_id)

    @property
    def window_steps(self) -> int:
        """Steps per live trace of the ``otel`` sink (``RLOBS_OTEL_TRACE_STEPS``; ``0`` for
        a child run, which stays whole in its parent's trace)."""
        return 0 if self.parent_id else env_int("RLOBS_OTEL_TRACE_STEPS", 100)

    @property
    def log_path(self) -> Path | None:
        """The run's JSONL log (``None`` when no log is written)."""
        return self._ctx.writer.path_for(self.run_id)

    # ------------------------------------------------------------------ hooks

    def start(self) -> Run:
        """Start the run (``with`` does this). Starting twice is a no-op.

        Raises:
            RunFileError: the run's log cannot be written, or another live process is
                writing a run with this id.
        """
        with self._lock:
            if self._started:
                return self
            self._start_ns = wall_ns()
            writer = self._ctx.writer
            rf, last = writer.open(self.run_id, self._lock, self._pending, self._reject)
            try:
                if last is not None:
                    self._continue_from(last)
                resumed_at = self._steps if last is not None else None
                self._ids = TraceIds.of(self.run_id, resumed_at, self._parent_key())
                event = self._ctx.describe(RunStart(
                    self.run_id, self.name, self.params, self.tags, self.parent_id,
                    self._start_ns, resumed_at=resumed_at, trace=self._ids.trace_key))
            except BaseException:
                writer.abort(rf)
                raise
            self._file = rf
            writer.begin(rf, event)
            self._started = self._open = True
        self._ctx.opened(self)
        return self

    def step(
        self,
        reward: float = 0.0,
        metrics: Mapping[str, float] | None = None,
        *,
        done: bool = False,
        truncated: bool = False,
        episodes: int = 0,
        env_steps: int = 1,
    ) -> None:
        """Record one agent step. Non-blocking, about a microsecond.

        Args:
            reward: the step's reward; anything :func:`float` reads as a number
                (numpy scalars, 0-d tensors, ``Decimal``); otherwise NaN, counted.
            metrics: extra scalar metrics; values that are not numbers are left out of
                the step, counted in ``RunEnd.rejected`` and logged once per cause.
            done: the episode terminated at this step.
            truncated: the episode was cut off at this step (time limit).
            episodes: episodes of sub-envs that ended at this step (a vector step), which
                ``done``/``truncated`` cannot say; counted in ``run.episodes`` and
                ``RunEnd.episodes``. Not a non-negative int: counted, taken as 0.
            env_steps: env steps this record stands for (a vector step of ``n`` sub-envs
                on the env-step axis: ``n``); the step index advances by ``env_steps`` and
                the record carries the last index. Not a positive int: counted, taken
                as 1.
        """
        if reward.__class__ is not float:
            reward = self._coerce_reward(reward)
        if metrics:
            try:
                clean = dict(metrics)  # a copy: the caller may reuse its dict
                check = sum(clean.values(), reward)  # C speed; raises for non-numbers
            except Exception:
                check = None
            if check.__class__ is not float:  # not plain numbers: numpy, tensors, arrays
                clean = self._numbers(metrics)
                check = math.nan  # look at this chunk closely
        else:
            clean = {}
            check = reward
        ended = False
        if done is not False or truncated is not False:  # identity checks: the usual call
            done, truncated = self._flag(done, "done"), self._flag(truncated, "truncated")
            ended = done or truncated
        if episodes is not _ZERO or env_steps is not _ONE:  # identity: the usual call
            self._step_counted(reward, clean, check, done, truncated, ended,
                               *self._counts(episodes, env_steps))
            return
        with self._lock:
            if not self._open:
                self._ignored += 1
                if self._ignored == 1:
                    self._ignoring()
                return
            index = self._steps
            total = self._total + reward
            if self._llm_step:  # LLM calls since the last step: their usage is the step's
                clean = {**clean, **self._llm_step}
                self._llm_step = {}
            episode = self._episodes
            ep_return = self._ep_return + reward
            pending = self._pending
            if ended:
                # The append is the step's commit point: a signal before it records
                # nothing, after it the step is whole (the end counts what was appended).
                pending.append(StepLine(self.run_id, index, reward, total, clean, done,
                                        truncated, episode, ep_return,
                                        index + 1 - self._ep_first,
                                        _now_ns() + _WALL_OFFSET_NS, 1, 1))
                self._episodes = episode + 1
                self._ep_return = 0.0
                self._ep_first = index + 1
            else:
                pending.append(StepLine(self.run_id, index, reward, total, clean, False,
                                        False, episode, None, None,
                                        _now_ns() + _WALL_OFFSET_NS, 1, 1))
                self._ep_return = ep_return
            self._steps = index + 1
            self._total = total
            if check - check != 0:  # NaN or infinity: the writer must look closely
                self._file.careful = True  # type: ignore[union-attr]
            queued = len(pending)
        if queued >= BACKLOG:
            self._write_backlog()

    def _step_counted(self, reward: float, clean: dict[str, float], check: Any, done: bool,
                      truncated: bool, ended: bool, episodes: int, env_steps: int) -> None:
        """:meth:`step` with ``episodes``/``env_steps`` (kept apart so that the usual call
        pays one identity check for them): the line carries the last index it stands
        for, and the episodes it ended count from it on."""
        with self._lock:
            if not self._open:
                self._ignored += 1
                if self._ignored == 1:
                    self._ignoring()
                return
            index = self._steps + env_steps - 1
            total = self._total + reward
            if self._llm_step:  # LLM calls since the last step: their usage is the step's
                clean = {**clean, **self._llm_step}
                self._llm_step = {}
            episode = self._episodes + episodes
            ep_return = self._ep_return + reward
            pending = self._pending
            length = index + 1 - self._ep_first if ended else None
            pending.append(StepLine(self.run_id, index, reward, total, clean, done,
                                    truncated, episode, ep_return if ended else None,
                                    length, _now_ns() + _WALL_OFFSET_NS, env_steps, 1))
            self._episodes = episode + ended
            self._ep_return = 0.0 if ended else ep_return
            if ended:
                self._ep_first = index + 1
            self._steps = index + 1
            self._total = total
            if check - check != 0:  # NaN or infinity: the writer must look closely
                self._file.careful = True  # type: ignore[union-attr]
            queued = len(pending)
        if queued >= BACKLOG:
            self._write_backlog()

    def span(self, name: str, *, kind: str | None = None, **attributes: Any) -> SpanScope:
        """Time a block as a span of the current step: ``with run.span("actor.forward"):``.

        ``kind`` (``"llm"``, ``"tool"``, ``"agent"``, ``"chain"``, ``"retriever"``,
        ``"embedding"``) is what LLM-agent viewers show it as; an unknown kind is logged
        and recorded as a plain ``kind`` attribute. ``scope.llm(...)`` records a model
        call's tokens, ``scope.io(...)`` its input and output (see docs/otel.md).
        When no sink wants spans this returns a shared no-op scope (tens of ns).
        """
        if not self._ctx.wants_spans:
            return NULL_SPAN
        if kind is not None:
            if kind in KINDS:
                attributes[KIND] = kind
            else:
                self._reject("kind", kind, why=f"not a span kind ({', '.join(KINDS)})")
                attributes["kind"] = kind
        return SpanScope(self._next_span_id, self._add_span, name, attributes,
                         self._add_usage)

    def _add_usage(self, model: str | None, input_tokens: float, output_tokens: float,
                   cost: float | None) -> None:
        """Count an LLM call in the metrics of the step it ends in and of the run."""
        with self._lock:
            for table in (self._llm_step, self._llm_total):
                table["llm.calls"] = table.get("llm.calls", 0.0) + 1
                table["llm.input_tokens"] = table.get("llm.input_tokens", 0.0) + input_tokens
                table["llm.output_tokens"] = (table.get("llm.output_tokens", 0.0)
                                              + output_tokens)
                if cost is not None:
                    table["llm.cost_usd"] = table.get("llm.cost_usd", 0.0) + cost

    def record_span(
        self,
        name: str,
        start_ns: int,
        end_ns: int,
        attributes: Mapping[str, Any] | None = None,
        *,
        error: str | None = None,
        parent_span_id: int | None = _UNSET,
    ) -> int:
        """Record an already-timed span (times from :func:`rlobs.wall_ns`); returns its id.

        Its parent is the innermost span open in this context unless ``parent_span_id``
        says otherwise (``None``: no parent).
        """
        if not self._ctx.wants_spans or not self._open:
            return 0
        parent = self.current_span_id if parent_span_id is _UNSET else parent_span_id
        span_id = self._next_span_id()
        self._add_span(name, start_ns, end_ns, attributes or {}, span_id, parent, error)
        return span_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Add params (nested mappings are flattened to dotted keys)."""
        self._update(params=flatten_params(params))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Add or change tags."""
        self._update(tags=clean_tags(tags))

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        """Record run-level (step-less) metrics, e.g. an evaluation's final scores."""
        self._update(metrics=self._numbers(metrics))

    def log_artifact(self, path: str | PathLike[str], artifact_path: str | None = None) -> None:
        """Attach a file or directory; sinks that store files copy it.

        A path that does not exist is logged and counted in ``rejected``, not raised.
        """
        try:
            resolved = Path(fspath(path)).resolve()
            found = resolved.exists()
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
            self._reject("artifact", repr(path), why=str(exc))
            return
        if not found:
            self._reject("artifact", str(resolved), why="no such file")
            return
        self._emit(Artifact(self.run_id, str(resolved), artifact_path, wall_ns()))

    def log_input_hash(self, path: str | PathLike[str], name: str | None = None, *,
                       context: str | None = None) -> str | None:
        """Hash a dataset file or directory (SHA-256) and tag the run with it; sinks that
        know datasets record it as one (MLflow: a dataset input of the run).

        Args:
            path: the file or directory.
            name: the dataset's name; default the file name.
            context: what the run used it for (``training``, ``evaluation``); tag
                ``rlobs.input.<name>.context``.

        Returns:
            The hex digest, also set as tag ``rlobs.input.<name>.sha256``; ``None`` (logged
            and counted in ``rejected``) if the path cannot be read.
        """
        try:
            digest = file_sha256(path)
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._reject("input", repr(path), why=why)
            return None
        label = name or Path(fspath(path)).name
        tags = {f"rlobs.input.{label}.sha256": digest,
                f"rlobs.input.{label}.path": str(Path(fspath(path)).resolve())}
        if context:
            tags[f"rlobs.input.{label}.context"] = str(context)
        self._update(tags=tags)
        return digest

    def end(self, status: RunStatus | str = RunStatus.FINISHED,
            error: str | None = None) -> RunEnd | None:
        """End the run (``with`` does this): its end is written and the log closed; the
        in-process sinks get a bounded time to take it. Shipping it to the shipper's sinks
        goes on after this returns.

        Ending twice is harmless and returns the first end. Returns ``None`` if the run
        never started (or belongs to the process this one was forked from).
        """
        end = self.finish(RunStatus(status), error)
        if end is not None:
            self._ctx.ended(self, end)
        return self._end

    def finish(self, status: RunStatus, error: str | None,
               lock_wait_s: float | None = None) -> RunEnd | None:
        """Write the run's end once, without waiting for sinks to take it (the hub's
        signal and exit paths use this; :meth:`end` is the public way).

        Locks are waited for at most ``lock_wait_s`` (default ``end_timeout_s``): a
        signal handler may run while its own thread holds one mid-step.
        """
        wait_s = self._ctx.end_timeout_s if lock_wait_s is None else lock_wait_s
        error = None if error is None else redact_text(str(error))
        if self._llm_total and self._open:
            totals, self._llm_total = self._llm_total, {}
            self._update(metrics={f"{k}_total": v for k, v in totals.items()})
        locked = self._lock.acquire(timeout=wait_s)
        try:
            if not self._open or self._file is None:
                return None
            self._open = False
        finally:
            if locked:
                self._lock.release()
        self._end = self._ctx.writer.end(
            self._file, lambda last, dropped: self._make_end(status, error, last, dropped),
            settle_s=self._ctx.end_timeout_s, lock_wait_s=wait_s)
        return self._end

    # ------------------------------------------------------------------ internals

    def _continue_from(self, last: Step) -> None:
        """Resume the counts of a log that already holds steps (a new episode begins)."""
        self._steps = self._ep_first = last.step + 1
        self._total = last.cumulative_reward
        self._episodes = last.episode + (last.episode_return is not None)

    def _make_end(self, status: RunStatus, error: str | None, last: StepLine | Step | None,
                  dropped: dict[str, int]) -> RunEnd:
        """The end as the log says it: counts from the last step written, so a step cut
        short by a signal is either in the log and counted, or neither."""
        steps, total, episodes = 0, 0.0, 0
        if last is not None:
            steps, total = last.step + 1, last.cumulative_reward
            episodes = last.episode + (last.episode_return is not None)
        now = wall_ns()
        return RunEnd(self.run_id, status, steps, total, episodes,
                      (now - self._start_ns) / 1e9, error, dropped, self._rejected, now)

    def _write_backlog(self) -> None:
        """A loop stepping flat out writes its own backlog, in one go (no thread hand-off
        per chunk: on one GIL that costs more than the encoding)."""
        if self._file is not None:
            self._ctx.writer.drain(self._file)

    def _add_span(self, name: str, start_ns: int, end_ns: int, attributes: Any,
                  span_id: int, parent_span_id: int | None, error: str | None) -> None:
        """Queue a span of the current step, in order with the steps around it."""
        if attributes:
            attributes = clean_attributes(attributes)
        if error is not None:
            error = redact_text(error)
        with self._lock:
            if not self._open:
                return
            pending = self._pending
            pending.append(SpanLine(self.run_id, name, self._steps, start_ns, end_ns,
                                    attributes, span_id, parent_span_id, error, 1))
            self._file.careful = True  # type: ignore[union-attr]  # attributes are free-form
            queued = len(pending)
        if queued >= BACKLOG:
            self._write_backlog()

    def _update(self, *, params: Mapping[str, Any] | None = None,
                tags: Mapping[str, str] | None = None,
                metrics: Mapping[str, float] | None = None) -> None:
        self._emit(RunUpdate(self.run_id, params or {}, tags or {}, metrics or {}, wall_ns()))

    def _emit(self, event: RunUpdate | Artifact) -> None:
        if not self._open or self._file is None:
            self._ignored += 1
            if self._ignored == 1:
                self._ignoring()
            return
        self._ctx.writer.emit(self._file, event)

    def _coerce_reward(self, reward: Any) -> float:
        value = as_number(reward)
        if value is None:
            self._reject("reward", reward)
            return math.nan
        return float(value)

    def _counts(self, episodes: Any, env_steps: Any) -> tuple[int, int]:
        """``episodes``/``env_steps`` as ints; one that is not is counted and defaulted."""
        if not (_is_int(episodes) and episodes >= 0):
            self._reject("episodes", episodes, why="not a non-negative int")
            episodes = 0
        if not (_is_int(env_steps) and env_steps >= 1):
            self._reject("env_steps", env_steps, why="not a positive int")
            env_steps = 1
        return int(episodes), int(env_steps)

    def _flag(self, value: Any, name: str) -> bool:
        """``done``/``truncated`` as a bool; one whose truth is undefined (an array, a meta
        tensor) is rejected, counted, and taken as false."""
        if value is True or value is False:
            return value
        try:
            return bool(value)
        except Exception:
            self._reject(name, value, why="not a truth value")
            return False

    def _numbers(self, metrics: Any) -> dict[str, float]:
        """Metric values as floats; what is not a number is rejected and counted (a
        ``metrics`` that is not a mapping at all counts once)."""
        clean: dict[str, float] = {}
        try:
            items = list(metrics.items())
        except Exception:
            self._reject("metrics", metrics, why="not a mapping")
            return clean
        for key, value in items:
            number = as_number(value)
            if number is None:
                self._reject(str(key), value)
            else:
                clean[str(key)] = float(number)
        return clean

    def _ignoring(self) -> None:
        """Say once why this run's hooks are ignored (counted in ``run.ignored``)."""
        why = ("it belongs to the process this one was forked from" if self._forked else
               "it has ended" if self._end is not None else "it has not started")
        logger.warning("run hook ignored", run=self.name, reason=why)

    def _reject(self, key: str, value: Any, why: str = "not a number") -> None:
        """Count a value left out; log the 1st, 2nd, 4th, … (any thread may call this)."""
        with self._count_lock:
            self._rejected += 1
            count = self._rejected
        if count & (count - 1) == 0:
            logger.warning("value not recorded", run=self.name, key=key, reason=why,
                           value_type=type(value).__name__, rejected=count)

    def _forget_after_fork(self) -> None:
        """In a forked child: the run belongs to the parent, which goes on writing it."""
        self._lock = threading.RLock()
        self._pending = []
        self._open = False
        self._file = None
        self._forked = True

    # ------------------------------------------------------------------ context managers

    def __enter__(self) -> Run:
        self.start()
        self._tokens.append(_current_run.set(self))
        self._attach_otel()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._reset_current()
        self.end(*status_for(exc))

    async def __aenter__(self) -> Run:
        await anyio.to_thread.run_sync(self.start)
        self._tokens.append(_current_run.set(self))
        self._attach_otel()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self._reset_current()
        status, error = status_for(exc)
        with anyio.CancelScope(shield=True):  # cleanup survives the caller's cancellation
            await anyio.to_thread.run_sync(self.end, status, error)

    def _attach_otel(self) -> None:
        """With ``RLOBS_OTEL_CONTEXT=1``, make :func:`rlobs.otel_context` current in the
        block (OpenTelemetry instrumentation then nests under the run's spans)."""
        if not env_bool(RLOBS_OTEL_CONTEXT, False):
            return
        try:
            from ._traceids import otel_context

            context = otel_context(self)
            from opentelemetry import context as otel
        except Exception as exc:  # OpenTelemetry missing: the run goes on without it
            logger.warning("RLOBS_OTEL_CONTEXT is set but no OpenTelemetry context could "
                           "be made", run=self.name, error=f"{type(exc).__name__}: {exc}")
            return
        self._otel_tokens.append((otel, otel.attach(context)))

    def _reset_current(self) -> None:
        if self._otel_tokens:
            otel, token = self._otel_tokens.pop()
            with contextlib.suppress(Exception):  # another context than entered
                otel.detach(token)
        if self._tokens:
            # ValueError: exited in another context than entered; nothing to undo there.
            with contextlib.suppress(ValueError):
                _current_run.reset(self._tokens.pop())

    def __repr__(self) -> str:
        state = "ended" if self._end else ("active" if self._started else "new")
        return f"<Run {self.name!r} id={self.run_id} {state} steps={self._steps}>"


def _is_int(value: Any) -> bool:
    """An int, numpy integer or integral 0-d tensor (not a bool, not a float)."""
    if value.__class__ is int:
        return True
    if isinstance(value, bool | float) or not hasattr(value, "__index__"):
        return False
    try:
        value.__index__()
    except Exception:  # a float tensor, a meta tensor
        return False
    return True


_runs: weakref.WeakSet[Run] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for run in list(_runs):
        run._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
