"""The sender: one thread that moves buffered data to MLflow, through outages and errors.

The sink's hooks only convert events and append here; this thread does every request,
one run's unit of work at a time (create or resume the run, params and tags, metric
batches, artifacts, then the log and the status), so each metric keeps step order and
the next batch is converted while one is in flight. Failures are classified
(:mod:`._retry`): an outage keeps everything buffered and is probed every second; a
429/5xx is retried a few times; a rejection drops only that request — bisected first so
one bad value loses only itself — and counts what it carried. Every value a run lost is
counted on the run (:meth:`Sender.delivery`) and named in its ``rlobs.missing`` tag.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlobs import Delivery, RunEnd, RunStart, TraceIds, redact_uri
from rlobs._log import logger

from ._aggregate import Point
from ._mapping import MAX_METRICS_PER_BATCH, MAX_TAG_VALUE, chunk_items, truncate
from ._native import native_tags, run_name
from ._retry import (
    MAX_ATTEMPTS,
    OUTAGE,
    OUTAGE_PROBE_S,
    REJECT,
    RETRY,
    Backoff,
    classify,
    http_status,
)
from ._store import GAPS_TAG, HEARTBEAT_TAG, RUN_ID_TAG, Skip, Store

_SCAN = 50_000  # points examined per request when resuming skips most of them
_STATUS = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}
MISSING_TAG = "rlobs.missing"
"""Set on a run ended with data that never reached MLflow: what is missing and why."""
_FINISHED_KEPT = 10_000
_MAX_WINDOW_LINKS = 1000
"""Live-window traces of one run linked to its MLflow run (the first ones)."""


@dataclass(eq=False)
class RunState:
    """One run's pending data, shared between the hooks and the sender (under its lock)."""

    start: RunStart
    experiment: str
    points: deque[Point] = field(default_factory=deque)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: deque[tuple[str, str | None]] = field(default_factory=deque)
    jobs: deque[tuple[str, dict[str, str]]] = field(default_factory=deque)  # inputs, models
    retry_items: deque[list[tuple[str, str, str]]] = field(default_factory=deque)
    retry_points: deque[list[Point]] = field(default_factory=deque)
    end: RunEnd | None = None
    log_path: Path | None = None
    mlflow_id: str | None = None
    skip: Skip | None = None
    unsure: bool = False  # a metrics request failed in flight: it may have landed
    log_uploaded: bool = False
    orphan_of: str | None = None  # rlobs id of a parent not yet in MLflow at creation
    creating: bool = False  # a create_run was sent (its answer may have been lost)
    attempts: int = 0  # 429/5xx answers to the current request
    retry_at: float = 0.0  # after such an answer: when to send it again
    lost: int = 0
    why: dict[str, int] = field(default_factory=dict)  # reason → values lost
    abandoned: str | None = None

    def has_work(self) -> bool:
        return (self.mlflow_id is None or bool(
            self.points or self.params or self.tags or self.artifacts or self.jobs
            or self.retry_items
            or self.retry_points) or self.end is not None)

    def pending(self) -> int:
        """Values and requests not in MLflow yet (the end counts one)."""
        return (len(self.points) + len(self.params) + len(self.tags) + len(self.artifacts)
                + len(self.jobs)
                + sum(map(len, self.retry_items)) + sum(map(len, self.retry_points))
                + (self.end is not None))

    def lose(self, count: int, reason: str) -> None:
        self.lost += count
        self.why[reason] = self.why.get(reason, 0) + count

    def missing(self) -> str | None:
        if self.abandoned:
            return self.abandoned
        if not self.why:
            return None
        return "; ".join(f"{n} lost: {reason}" for reason, n in self.why.items())


def _keep(skip: Skip | None, point: Point) -> bool:
    if skip is None:
        return True
    rule = skip.get(point[0])
    if rule is None:
        return True
    if isinstance(rule, int):
        return point[3] > rule
    return point[3] not in rule


def _reason(exc: BaseException) -> str:
    """A failure in a few words: ``HTTP 500`` for an answer, else the error's text."""
    status = http_status(exc)
    if status is not None:
        code = getattr(exc, "error_code", None)
        return f"HTTP {status}" + (f" {code}" if code and code != "INTERNAL_ERROR" else "")
    return redact_uri(f"{type(exc).__name__}: {str(exc)[:200]}")


class Sender:
    """Owns the pending data of every run and the thread that sends it.

    Args:
        store: the MLflow calls.
        max_buffer: metric values held at most; beyond, new values are dropped and counted.
        retry_cap_s: longest backoff between tries of a failing request.
    """

    def __init__(self, store: Store, *, max_buffer: int, retry_cap_s: float = 30.0) -> None:
        self.store = store
        self.max_buffer = max_buffer
        self.buffered = 0
        self.sent = 0
        self.lost = 0
        self.failed_requests = 0
        self.backoff = Backoff(cap_s=retry_cap_s)
        self._runs: dict[str, RunState] = {}
        self._finished: OrderedDict[str, tuple[int, str | None]] = OrderedDict()
        # The batch of the request in flight (the thread's own), requeued if it fails.
        self._inflight_items: list[tuple[str, str, str]] = []
        self._inflight_points: list[Point] = []
        self._cond = threading.Condition()
        self._stop = False
        self._progress = 0  # requests done (or given up): what waiting callers watch
        self._thread = threading.Thread(target=self._main, name="rlobs-mlflow-sender",
                                        daemon=True)  # never holds up interpreter exit

    def start(self) -> None:
        """Start the sending thread."""
        self._thread.start()

    # ------------------------------------------------------------------ hooks' side

    def add_run(self, state: RunState) -> None:
        """Track a new run (created in MLflow, or found and resumed, by the thread)."""
        with self._cond:
            self._runs[state.start.run_id] = state
            self._finished.pop(state.start.run_id, None)
            self._cond.notify_all()

    def add(self, run_id: str, points: list[Point], params: dict[str, str] | None = None,
            tags: dict[str, str] | None = None) -> None:
        """Queue points, params and tags of a run; points over the bound are dropped."""
        with self._cond:
            state = self._runs.get(run_id)
            if state is None:
                return
            if points:
                room = max(0, self.max_buffer - self.buffered)
                if len(points) > room:  # keep the oldest; the gap tag makes sync compare
                    self._lose(state, len(points) - room, "buffer full while MLflow was "
                               "unreachable")
                    state.tags[GAPS_TAG] = "true"
                    points = points[:room]
                state.points.extend(points)
                self.buffered += len(points)
            if params:
                state.params.update(params)
            if tags:
                state.tags.update(tags)
            self._cond.notify_all()

    def add_artifact(self, run_id: str, path: str, artifact_path: str | None) -> None:
        """Queue a file upload."""
        with self._cond:
            state = self._runs.get(run_id)
            if state is not None:
                state.artifacts.append((path, artifact_path))
                self._cond.notify_all()

    def add_job(self, run_id: str, kind: str, payload: dict[str, str]) -> None:
        """Queue a dataset input (``dataset``) or a model to log (``model``)."""
        with self._cond:
            state = self._runs.get(run_id)
            if state is not None:
                state.jobs.append((kind, payload))
                self._cond.notify_all()

    def end_run(self, end: RunEnd, log_path: Path | None) -> None:
        """Mark a run ended (its final data already queued)."""
        with self._cond:
            state = self._runs.get(end.run_id)
            if state is not None:
                state.end, state.log_path = end, log_path
                self._cond.notify_all()

    def delivery(self, run_id: str) -> Delivery:
        """What MLflow does not hold yet of a run, and what it lost for good."""
        with self._cond:
            state = self._runs.get(run_id)
            if state is not None:
                return Delivery(state.pending(), state.lost, state.missing())
            lost, missing = self._finished.get(run_id, (0, None))
            return Delivery(0, lost, missing)

    def abandon(self, run_id: str, reason: str) -> None:
        """Drop what a run still has buffered (counted); end it with ``rlobs.missing``."""
        with self._cond:
            state = self._runs.get(run_id)
            if state is None:
                return
            dropped = (len(state.points) + sum(map(len, state.retry_points))
                       + len(state.artifacts) + len(state.jobs)
                       + sum(map(len, state.retry_items)))
            self.buffered -= len(state.points)
            state.points.clear()
            state.retry_points.clear()
            state.retry_items.clear()
            state.artifacts.clear()
            state.jobs.clear()
            self._lose(state, dropped, "given up")
            state.abandoned = reason
            self._cond.notify_all()

    def wait_below(self, limit: int) -> None:
        """Backpressure: wait while more than ``limit`` values are buffered (until the
        sender stops, or runs are abandoned)."""
        with self._cond:
            while self.buffered > limit and not self._stop:
                self._cond.wait(0.1)

    def wait_until(self, done: Callable[[], bool], idle_s: float) -> bool:
        """Wait until ``done()``, as long as requests keep succeeding: give up after
        ``idle_s`` without progress (1 s while MLflow is down)."""
        with self._cond:
            last, since = self._progress, time.monotonic()
            while not done():
                now = time.monotonic()
                if self._progress != last:
                    last, since = self._progress, now
                down = self.backoff.down_since is not None
                if now - since > (min(idle_s, 1.0) if down else idle_s) or self._stop:
                    return False
                self._cond.wait(0.05)
            return True

    def close(self, idle_s: float) -> int:
        """Send what can be sent (see :meth:`wait_until`), then stop. Returns values
        unsent."""
        self.wait_until(lambda: not self._runs, idle_s)
        with self._cond:
            self._stop = True
            unsent = self.buffered
            self._cond.notify_all()
        self._thread.join(1.0)
        return unsent

    def pending_runs(self) -> int:
        """Runs with data or an end not yet in MLflow."""
        return len(self._runs)

    # ------------------------------------------------------------------ the thread

    def _main(self) -> None:
        while True:
            with self._cond:
                while not self._stop:
                    wait = self.backoff.wait_s()
                    runs = [s for s in self._runs.values() if s.has_work()]
                    ready = [s for s in runs if s.retry_at <= time.monotonic()]
                    if not wait and ready:
                        break
                    later = min((s.retry_at for s in runs), default=None)
                    if not wait and later is not None:
                        wait = max(0.01, later - time.monotonic())
                    self._cond.wait(wait or None)
                if self._stop:
                    return
            try:
                for state in ready:
                    if self._unit(state):
                        self.backoff.succeeded()  # the server answers (again)
                    with self._cond:
                        self._progress += 1
                        self._cond.notify_all()
            except _Unreachable as exc:
                if self.backoff.failures == 0:
                    logger.warning("mlflow unreachable; buffering and retrying",
                                   error=_reason(exc.cause))
                self.backoff.failed(exc.cause, cap_s=OUTAGE_PROBE_S)

    def _unit(self, state: RunState) -> bool:
        """One request's worth of work for a run (see the module docstring). Returns
        whether the server answered it well; raises :class:`_Unreachable` in an outage.
        """
        try:
            self._request(state)
        except Exception as exc:
            kind = classify(exc)
            if kind == OUTAGE or (kind == RETRY and state.attempts + 1 < MAX_ATTEMPTS):
                self._requeue(state)
                if kind == OUTAGE:
                    raise _Unreachable(exc) from exc
                state.attempts += 1  # this run waits a little; the others go on
                state.retry_at = time.monotonic() + 0.25 * 2 ** (state.attempts - 1)
                return False
            self.failed_requests += 1
            logger.warning("mlflow refused a request; dropped", run=state.start.name,
                           error=_reason(exc), answer=kind)
            self._refused(state, _reason(exc), bisect=kind == REJECT)
            return False
        state.attempts, state.retry_at = 0, 0.0
        return True

    def _request(self, state: RunState) -> None:
        if state.mlflow_id is None:
            self._open(state)
        elif state.retry_items or state.params or state.tags:
            self._send_items(state)
        elif state.retry_points or state.points:
            self._send_points(state)
        elif state.jobs:
            self._job(state)
        elif state.artifacts:
            self._upload(state)
        elif state.end is not None:
            self._finish(state)

    def _refused(self, state: RunState, reason: str, *, bisect: bool) -> None:
        """Give up the request that was refused — bisecting one that carried many values
        when the server refused what it said (``bisect``), so one bad value loses only
        itself — and go on with the rest."""
        with self._cond:
            state.attempts = 0
            if state.mlflow_id is None:  # the run cannot be created at all
                self._lose(state, state.pending(), f"run not created: {reason}")
                self.buffered -= len(state.points)
                self._forget(state)
            elif self._inflight_items:
                self._split(state.retry_items, self._inflight_items, state, reason, bisect)
            elif self._inflight_points:
                self._split(state.retry_points, self._inflight_points, state, reason, bisect)
            elif state.jobs:
                kind, payload = state.jobs.popleft()
                self._lose(state, 1, f"{kind} {payload.get('name')}: {reason}")
            elif state.artifacts:
                path, _ = state.artifacts.popleft()
                self._lose(state, 1, f"artifact {Path(path).name}: {reason}")
            else:
                self._lose(state, 1, f"run end: {reason}")
                self._forget(state)
            self._inflight_items, self._inflight_points = [], []

    def _requeue(self, state: RunState) -> None:
        """Put the batch of a request that may pass later back in front of its queue."""
        with self._cond:
            if self._inflight_items:
                state.retry_items.appendleft(self._inflight_items)
            if self._inflight_points:
                state.retry_points.appendleft(self._inflight_points)
            self._inflight_items, self._inflight_points = [], []

    def _split(self, queue: deque[Any], batch: list[Any], state: RunState, reason: str,
               bisect: bool) -> None:
        if bisect and len(batch) > 1:
            middle = len(batch) // 2
            queue.appendleft(batch[middle:])
            queue.appendleft(batch[:middle])
            return
        if len(batch) > 1:
            self._lose(state, len(batch), f"a batch of {len(batch)} values ({reason})")
            return
        (item,) = batch
        key = item[1] if len(item) == 3 else item[0]  # (kind, key, value) | (key, value, ms, step)
        self._lose(state, 1, f"{key!r} refused ({reason})")

    def _lose(self, state: RunState, count: int, reason: str) -> None:
        if count:
            state.lose(count, reason)
            self.lost += count

    def _forget(self, state: RunState) -> None:
        run_id = state.start.run_id
        self._runs.pop(run_id, None)
        self._finished[run_id] = (state.lost, state.missing())
        while len(self._finished) > _FINISHED_KEPT:
            self._finished.popitem(last=False)
        self._cond.notify_all()

    def _open(self, state: RunState) -> None:
        store, start = self.store, state.start
        exp_id = store.experiment_id(state.experiment)
        existing = store.find_run([exp_id], start.run_id) or store.find_run_anywhere(
            start.run_id)
        if existing is not None:
            mlflow_id, skip = store.resume(start.run_id, existing)
            state.skip = skip or None
            logger.info("mlflow run resumed", run=start.name, mlflow_run_id=mlflow_id)
        else:
            # MLflow's own tags go with the create: ``mlflow.user`` sets the run's user.
            tags = {**native_tags(start.tags), RUN_ID_TAG: start.run_id,
                    HEARTBEAT_TAG: str(start.time_ns)}
            if start.parent_id:
                tags["rlobs.parent_id"] = start.parent_id
                parent = self._parent_id(exp_id, start.parent_id)
                if parent is not None:
                    tags["mlflow.parentRunId"] = parent
                else:  # the parent's run may still be on its way (another process)
                    state.orphan_of = start.parent_id
            retried, state.creating = state.creating, True
            mlflow_id = store.create_run(exp_id, start.run_id,
                                         run_name(start.name, start.params),
                                         start.time_ns // 1_000_000, tags)
            if retried:  # a create whose answer was lost may have landed after all
                mlflow_id = store.one_run(exp_id, start.run_id, mlflow_id)
        with self._cond:
            state.mlflow_id = mlflow_id
        trace = ((start.sinks or {}).get("otel") or {}).get("trace_id")
        if trace:  # the otel sink sends this run's trace: list it in the run's Traces tab
            store.link_trace(mlflow_id, str(trace))

    def _parent_id(self, exp_id: str, parent_rlobs_id: str) -> str | None:
        parent = self.store.mlflow_id(parent_rlobs_id)
        if parent is None and (found := self.store.find_run([exp_id], parent_rlobs_id)):
            parent = str(found.info.run_id)
        return parent

    def _adopt(self, state: RunState) -> None:
        """Nest a child whose parent had no MLflow run yet when the child was created."""
        assert state.mlflow_id is not None and state.orphan_of is not None
        parent = self._parent_id(self.store.experiment_id(state.experiment), state.orphan_of)
        if parent is not None:
            self.store.log_items(state.mlflow_id, [], [("mlflow.parentRunId", parent)])
        else:
            logger.warning("parent run not found in mlflow; child left unnested",
                           run=state.start.name, parent=state.orphan_of)
        state.orphan_of = None

    def _send_items(self, state: RunState) -> None:
        assert state.mlflow_id is not None
        with self._cond:
            if state.retry_items:
                batch = state.retry_items.popleft()
            else:
                params = next(chunk_items(state.params), [])
                tags = next(chunk_items(state.tags), []) if not params else []
                batch = [("param", k, v) for k, v in params] + [("tag", k, v) for k, v in tags]
                for kind, key, value in batch:
                    pending = state.params if kind == "param" else state.tags
                    if pending.get(key) is value:
                        del pending[key]
            self._inflight_items = batch
        self.store.log_items(state.mlflow_id,
                             [(k, v) for kind, k, v in batch if kind == "param"],
                             [(k, v) for kind, k, v in batch if kind == "tag"])
        self._inflight_items = []

    def _send_points(self, state: RunState) -> None:
        assert state.mlflow_id is not None
        with self._cond:
            if state.retry_points:
                batch = state.retry_points.popleft()
            else:
                batch = []
                consumed = 0
                for point in itertools.islice(state.points, _SCAN):
                    if len(batch) == MAX_METRICS_PER_BATCH:
                        break
                    consumed += 1
                    if _keep(state.skip, point):
                        batch.append(point)
                for _ in range(consumed):
                    state.points.popleft()
                self.buffered -= consumed
            self._inflight_points = batch
        if batch:
            if not (state.unsure and self.store.landed(state.mlflow_id, batch)):
                state.unsure = True
                self.store.log_points(state.mlflow_id, batch)
            state.unsure = False
        with self._cond:
            self._inflight_points = []
            self.sent += len(batch)
            self._cond.notify_all()

    def _job(self, state: RunState) -> None:
        assert state.mlflow_id is not None
        kind, payload = state.jobs[0]
        if kind == "dataset":
            self.store.log_dataset(state.mlflow_id, **payload)
        else:
            self.store.log_model(state.mlflow_id, payload)
        with self._cond:
            state.jobs.popleft()

    def _upload(self, state: RunState) -> None:
        assert state.mlflow_id is not None
        path, artifact_path = state.artifacts[0]
        self.store.upload(state.mlflow_id, path, artifact_path)
        with self._cond:
            state.artifacts.popleft()

    def _finish(self, state: RunState) -> None:
        """Upload the run's log, then set its status — even when the upload is refused."""
        assert state.mlflow_id is not None and state.end is not None
        if state.orphan_of is not None:
            try:
                self._adopt(state)
            except Exception as exc:
                if classify(exc) == OUTAGE:
                    raise
                logger.warning("could not nest the run under its parent", error=_reason(exc))
                state.orphan_of = None
        if not state.log_uploaded and state.log_path is not None:
            try:
                if state.log_path.exists():
                    self.store.upload(state.mlflow_id, str(state.log_path), "rlobs")
            except Exception as exc:
                if classify(exc) == OUTAGE or (classify(exc) == RETRY
                                               and state.attempts + 1 < MAX_ATTEMPTS):
                    raise
                self.failed_requests += 1
                self._lose(state, 1, f"run log upload: {_reason(exc)}")
            state.log_uploaded = True
        missing = state.missing()
        if missing:
            try:
                self.store.log_items(state.mlflow_id, [],
                                     [(MISSING_TAG, truncate(missing, MAX_TAG_VALUE))])
            except Exception as exc:  # the status matters more than the tag saying why
                if classify(exc) == OUTAGE:
                    raise
                self.failed_requests += 1
        end = state.end
        self._link_windows(state)
        self.store.terminate(state.mlflow_id, _STATUS[end.status.value],
                             end.time_ns // 1_000_000)
        with self._cond:
            self._forget(state)

    def _link_windows(self, state: RunState) -> None:
        """Link the live-window traces of a long run (the otel sink's) to its run too."""
        otel = (state.start.sinks or {}).get("otel") or {}
        window = otel.get("window_steps")
        if not otel.get("trace_id") or not isinstance(window, int) or window <= 0 \
                or state.end is None or state.mlflow_id is None:
            return
        ids = TraceIds.of_start(state.start)
        first = max(1, TraceIds.window_of(state.start.resumed_at or 0, window))
        last = TraceIds.window_of(max(state.end.steps - 1, 0), window)
        traces = [f"{ids.trace_of(w):032x}" for w in range(first, last + 1)]
        for offset in range(0, min(len(traces), _MAX_WINDOW_LINKS), 100):  # 100 per call
            self.store.link_traces(state.mlflow_id, traces[offset:offset + 100])


class _Unreachable(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


__all__ = ["MISSING_TAG", "REJECT", "RunState", "Sender"]
