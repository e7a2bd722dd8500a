"""The sender: one thread that moves buffered data to MLflow, retrying through outages.

The sink's hooks (on the hub's worker thread) only convert events and append them here;
this thread does every request. Converting the next batch while the previous request is
in flight is the pipelining that pays on a one-worker server; one sender keeps each
metric's values in step order. Failures that may pass (unreachable server, 429, 5xx) are
retried with exponential backoff, everything stays buffered (bounded, counted); other
failures drop the one request that caused them, counted and logged.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rlobs import RunEnd, RunStart
from rlobs._log import logger

from ._aggregate import Point
from ._mapping import MAX_METRICS_PER_BATCH, chunk_items
from ._retry import Backoff, is_transient
from ._store import GAPS_TAG, HEARTBEAT_TAG, RUN_ID_TAG, Skip, Store

_SCAN = 50_000  # points examined per request when resuming skips most of them
_STATUS = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}


@dataclass(eq=False)
class RunState:
    """One run's pending data, shared between the hooks and the sender (under its lock)."""

    start: RunStart
    experiment: str
    points: deque[Point] = field(default_factory=deque)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: deque[tuple[str, str | None]] = field(default_factory=deque)
    end: RunEnd | None = None
    log_path: Path | None = None
    mlflow_id: str | None = None
    skip: Skip | None = None
    unsure: bool = False  # a metrics request failed in flight: it may have landed
    log_uploaded: bool = False
    orphan_of: str | None = None  # rlobs id of a parent not yet in MLflow at creation
    done: threading.Event = field(default_factory=threading.Event)

    def has_work(self) -> bool:
        return (self.mlflow_id is None or bool(self.points or self.params or self.tags
                or self.artifacts) or self.end is not None)


def _keep(skip: Skip | None, point: Point) -> bool:
    if skip is None:
        return True
    rule = skip.get(point[0])
    if rule is None:
        return True
    if isinstance(rule, int):
        return point[3] > rule
    return point[3] not in rule


def wait_for_log_end(path: Path, timeout_s: float) -> bool:
    """Wait until a JSONL log's last line is its run end (its sink writes on its own
    thread, possibly just after this one). Returns whether it is."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with path.open("rb") as handle:
                handle.seek(max(0, path.stat().st_size - 4096))
                tail = handle.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
            if b'"type":"run_end"' in tail:
                return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


class Sender:
    """Owns the pending data of every run and the thread that sends it.

    Args:
        store: the MLflow calls.
        max_buffer: metric values held at most; beyond, new values are dropped and counted.
        log_wait_s: bound on waiting for a run's JSONL file to be complete before upload.
        retry_cap_s: longest backoff between tries.
    """

    def __init__(self, store: Store, *, max_buffer: int, log_wait_s: float = 2.0,
                 retry_cap_s: float = 30.0) -> None:
        self.store = store
        self.max_buffer = max_buffer
        self.log_wait_s = log_wait_s
        self.buffered = 0
        self.sent = 0
        self.lost = 0
        self.failed_requests = 0
        self.backoff = Backoff(cap_s=retry_cap_s)
        self._runs: dict[str, RunState] = {}
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
                if len(points) > room:  # keep the oldest; the gap tag makes replay compare
                    self.lost += len(points) - room
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

    def end_run(self, end: RunEnd, log_path: Path | None) -> threading.Event | None:
        """Mark a run ended (final data already queued); returns its done event."""
        with self._cond:
            state = self._runs.get(end.run_id)
            if state is None:
                return None
            state.end, state.log_path = end, log_path
            self._cond.notify_all()
            return state.done

    def wait_below(self, limit: int, timeout_s: float) -> None:
        """Backpressure: wait while more than ``limit`` values are buffered and MLflow
        takes them (not while it is down: the run must go on)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while (self.buffered > limit and self.backoff.down_since is None
                   and not self._stop and time.monotonic() < deadline):
                self._cond.wait(0.1)

    def wait_until(self, done: Callable[[], bool], idle_s: float) -> bool:
        """Wait until ``done()``, as long as requests keep succeeding: give up after
        ``idle_s`` without progress, or after 1 s without progress while MLflow is down
        (so ending many runs during an outage does not wait ``idle_s`` for each)."""
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
                    if not wait and any(s.has_work() for s in self._runs.values()):
                        break
                    self._cond.wait(wait or None)
                if self._stop:
                    return
                runs = [s for s in self._runs.values() if s.has_work()]
            try:
                for state in runs:
                    self._unit(state)
                    with self._cond:
                        self._progress += 1
                        self._cond.notify_all()
                self.backoff.succeeded()
            except Exception as exc:  # transient: everything stays queued
                if self.backoff.failures == 0:
                    logger.warning("mlflow unreachable; buffering and retrying",
                                   error=f"{type(exc).__name__}: {str(exc)[:300]}")
                self.backoff.failed(exc)

    def _unit(self, state: RunState) -> None:
        """One request's worth of work for a run; transient failures propagate."""
        try:
            if state.mlflow_id is None:
                self._open(state)
            elif state.params or state.tags:
                self._send_items(state)
            elif state.points:
                self._send_points(state)
            elif state.artifacts:
                self._upload(state)
            elif state.end is not None:
                self._finish(state)
        except Exception as exc:
            if is_transient(exc):
                raise
            self.failed_requests += 1
            logger.warning("mlflow request failed; dropped", run=state.start.name,
                           error=f"{type(exc).__name__}: {str(exc)[:500]}")
            self._drop_after_failure(state)

    def _drop_after_failure(self, state: RunState) -> None:
        """Give up the request that failed for good, so the rest can go on."""
        with self._cond:
            if state.mlflow_id is None:  # cannot create the run at all: forget it
                self.lost += len(state.points)
                self.buffered -= len(state.points)
                self._forget(state)
            elif state.params or state.tags:
                state.params.clear()
                state.tags.clear()
            elif state.points:
                n = min(len(state.points), MAX_METRICS_PER_BATCH)
                for _ in range(n):
                    state.points.popleft()
                self.buffered -= n
                self.lost += n
            elif state.artifacts:
                state.artifacts.popleft()
            else:
                self._forget(state)

    def _forget(self, state: RunState) -> None:
        self._runs.pop(state.start.run_id, None)
        state.done.set()
        self._cond.notify_all()

    def _open(self, state: RunState) -> None:
        store, start = self.store, state.start
        exp_id = store.experiment_id(state.experiment)
        existing = store.find_run([exp_id], start.run_id)
        if existing is not None:
            mlflow_id, skip = store.resume(start.run_id, existing)
            state.skip = skip or None
            logger.info("mlflow run resumed", run=start.name, mlflow_run_id=mlflow_id)
        else:
            tags = {RUN_ID_TAG: start.run_id, HEARTBEAT_TAG: str(start.time_ns)}
            if start.parent_id:
                tags["rlobs.parent_id"] = start.parent_id
                parent = self._parent_id(exp_id, start.parent_id)
                if parent is not None:
                    tags["mlflow.parentRunId"] = parent
                else:  # the parent's run may still be on its way (another process)
                    state.orphan_of = start.parent_id
            mlflow_id = store.create_run(exp_id, start.run_id, start.name,
                                         start.time_ns // 1_000_000, tags)
        with self._cond:
            state.mlflow_id = mlflow_id

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
            params = next(chunk_items(state.params), [])
            tags = next(chunk_items(state.tags), []) if not params else []
        self.store.log_items(state.mlflow_id, params, tags)
        with self._cond:
            for pending, sent in ((state.params, params), (state.tags, tags)):
                for key, value in sent:
                    if pending.get(key) is value:
                        del pending[key]

    def _send_points(self, state: RunState) -> None:
        assert state.mlflow_id is not None
        with self._cond:
            batch: list[Point] = []
            consumed = 0
            for point in itertools.islice(state.points, _SCAN):
                if len(batch) == MAX_METRICS_PER_BATCH:
                    break
                consumed += 1
                if _keep(state.skip, point):
                    batch.append(point)
        if batch:
            if not (state.unsure and self.store.landed(state.mlflow_id, batch)):
                state.unsure = True
                self.store.log_points(state.mlflow_id, batch)
            state.unsure = False
        with self._cond:
            for _ in range(consumed):
                state.points.popleft()
            self.buffered -= consumed
            self.sent += len(batch)
            self._cond.notify_all()

    def _upload(self, state: RunState) -> None:
        assert state.mlflow_id is not None
        path, artifact_path = state.artifacts[0]
        self.store.upload(state.mlflow_id, path, artifact_path)
        with self._cond:
            state.artifacts.popleft()

    def _finish(self, state: RunState) -> None:
        """Upload the run's log, then set its status — even when the upload failed."""
        assert state.mlflow_id is not None and state.end is not None
        if state.orphan_of is not None:
            self._adopt(state)
        if not state.log_uploaded and state.log_path is not None:
            try:
                self._upload_log(state)
            except Exception as exc:
                if is_transient(exc):
                    raise
                self.failed_requests += 1
                logger.warning("run log upload failed; ending the run anyway",
                               run=state.start.name, error=f"{type(exc).__name__}: {exc}")
        state.log_uploaded = True
        end = state.end
        self.store.terminate(state.mlflow_id, _STATUS[end.status.value],
                             end.time_ns // 1_000_000)
        with self._cond:
            self._forget(state)

    def _upload_log(self, state: RunState) -> None:
        """Upload the JSONL log under ``rlobs/`` once its run end is written."""
        path = state.log_path
        if path is None or not path.exists():
            return
        if not wait_for_log_end(path, self.log_wait_s):
            logger.info("run log not complete yet; uploading it as it is", path=str(path))
        self.store.upload(state.mlflow_id or "", str(path), "rlobs")

