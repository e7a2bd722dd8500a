"""The MLflow sink: hooks convert events to MLflow points; a sender thread ships them.

It runs in the log directory's shipper process (``shipper = True``): :meth:`ship_env`
says how to rebuild it there, :meth:`start_context` records in the run's start which
experiment the run goes to, so shipping the log later does what this process would.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rlobs import (
    Artifact,
    Delivery,
    Heartbeat,
    Overflow,
    RunEnd,
    RunStart,
    RunUpdate,
    Sink,
    Span,
    Step,
    env_float,
    env_int,
    redact_uri,
    require,
)
from rlobs import environment_variables as core_env
from rlobs._log import logger

from . import environment_variables as ev
from ._aggregate import Downsample, Point, SpanStats, StepPoints
from ._mapping import MAX_TAG_VALUE, map_params, map_tags, truncate
from ._native import native_tags
from ._probe import probe_tracking_uri, sqlite_path
from ._sender import RunState, Sender
from ._store import GAPS_TAG, HEARTBEAT_TAG, Store

DEFAULT_JSONL_DIR = "rlobs-runs"
DEFAULT_EXPERIMENT = "rlobs"
"""The experiment of runs that name none, when no setting names one either."""
_KEPT = 10_000  # run ids whose experiment is remembered, so children join their parent
# Buffered values above which flush() waits for a reachable server: ~10 s of drain for a
# one-worker server, so a replay's end (or a close) never waits minutes for a backlog.
_HIGH_WATER = 50_000


def embedded_uri(jsonl_dir: str | os.PathLike[str]) -> str:
    """The embedded default store: ``sqlite:///<jsonl_dir>/mlflow.db`` (absolute)."""
    return f"sqlite:///{(Path(jsonl_dir).resolve() / 'mlflow.db')}"


def default_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``MLFLOW_TRACKING_URI``, else the embedded SQLite store (what the
    sink itself would use): the default of every command that reads MLflow."""
    return (uri or os.environ.get(ev.MLFLOW_TRACKING_URI)
            or embedded_uri(os.environ.get(core_env.RLOBS_JSONL_DIR) or DEFAULT_JSONL_DIR))


@contextlib.contextmanager
def _opening_sqlite(uri: str, wait_s: float = 120.0) -> Iterator[None]:
    """Held while a SQLite store is opened: MLflow creates a new store's tables on first
    open, and processes doing so at once fail ("duplicate column name") — two shippers of
    one directory, a shipper and an in-process sink. A lock file beside the store
    (``<store>.lock``) makes them take turns; past ``wait_s`` the open goes ahead anyway."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # drops the lock


@dataclass(eq=False)
class _Converter:
    """Per-run conversion state, touched only on the hub's worker thread."""

    steps: StepPoints
    spans: SpanStats
    last_step: int = -1
    staged: list[Point] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    result: bool = False  # a log_result run: no agent loop, no loop counters
    returns: deque[float] = field(default_factory=deque)  # the last episode returns
    scored: bool = False  # the run logged its own ``score``


def _datasets(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """The dataset inputs that ``run.log_input_hash`` tagged (``rlobs.input.<name>.*``)."""
    out = []
    for key, digest in tags.items():
        if key.startswith("rlobs.input.") and key.endswith(".sha256"):
            stem = key[:-len(".sha256")]
            out.append({"name": stem[len("rlobs.input."):], "digest": digest,
                        "path": tags.get(f"{stem}.path", ""),
                        "context": tags.get(f"{stem}.context", "")})
    return out


def _models(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """The models ``rlobs.torch.log_model`` recorded (tag ``rlobs.model.<name>``: JSON)."""
    out = []
    for key, value in tags.items():
        if key.startswith("rlobs.model."):
            try:
                record = json.loads(value)
            except ValueError:
                logger.warning("model record unreadable; not logged", tag=key)
                continue
            if isinstance(record, dict) and record.get("path"):
                out.append({"name": key[len("rlobs.model."):],
                            **{str(k): str(v) for k, v in record.items()}})
    return out


class MlflowSink(Sink):
    """Logs runs to MLflow: params, tags, per-step metrics, span statistics, status, logs.

    Args:
        tracking_uri: server or store URI; ``None`` uses the embedded SQLite default.
        experiment: experiment for runs that name none (``Hub.run(experiment=…)``) and
            whose parent has none; ``None``: ``RLOBS_MLFLOW_EXPERIMENT``, else
            ``MLFLOW_EXPERIMENT_NAME``, else ``rlobs``.
        downsample: ``Downsample`` or its text form (``"every:10"``, ``"window:5"``).
        span_interval_s: seconds of event time between span statistics.
        max_buffer: metric values held while MLflow is unreachable.
        end_wait_s: a run end waits for its data to reach MLflow until this long passes
            without progress (1 s while MLflow is down).
        request_timeout_s: bound on one HTTP request.
        max_retry_interval_s: longest wait between tries while MLflow is unreachable.
        jsonl_dir: the JSONL sink's directory (run logs to upload; embedded store);
            default ``RLOBS_JSONL_DIR``, else ``./rlobs-runs``.
        score_episodes: a run's ``score`` metric is the mean of its last this many
            episode returns, unless it logs its own ``score`` summary.

    Raises:
        ConfigError: ``downsample`` text is invalid.
    """

    name = "mlflow"
    overflow = Overflow.DROP
    capacity = 1 << 18
    flush_interval_s = 0.5  # ~2 requests per second per metric batch is what a server likes
    shipper = True

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        *,
        downsample: Downsample | str | None = None,
        span_interval_s: float = 10.0,
        max_buffer: int = 2_000_000,
        end_wait_s: float = 4.0,
        request_timeout_s: float = 15.0,
        max_retry_interval_s: float = 30.0,
        jsonl_dir: str | os.PathLike[str] | None = None,
        score_episodes: int = 10,
    ) -> None:
        self.jsonl_dir = Path(jsonl_dir or os.environ.get(core_env.RLOBS_JSONL_DIR)
                              or DEFAULT_JSONL_DIR)
        self.embedded = not tracking_uri
        self.tracking_uri = tracking_uri or embedded_uri(self.jsonl_dir)
        self.experiment = (experiment or os.environ.get(ev.RLOBS_MLFLOW_EXPERIMENT)
                           or os.environ.get(ev.MLFLOW_EXPERIMENT_NAME) or DEFAULT_EXPERIMENT)
        self.score_episodes = max(1, int(score_episodes))
        self._experiments: OrderedDict[str, str] = OrderedDict()
        self.downsample = (downsample if isinstance(downsample, Downsample)
                           else Downsample.parse(downsample))
        self.span_interval_s = span_interval_s
        self.max_buffer = max_buffer
        self.end_wait_s = end_wait_s
        self.request_timeout_s = request_timeout_s
        self.max_retry_interval_s = max_retry_interval_s
        self._sender: Sender | None = None
        self._runs: dict[str, _Converter] = {}
        self._logs: dict[str, Path] = {}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MlflowSink:
        return cls(
            env.get(ev.MLFLOW_TRACKING_URI) or None,
            env.get(ev.RLOBS_MLFLOW_EXPERIMENT) or env.get(ev.MLFLOW_EXPERIMENT_NAME) or None,
            downsample=env.get(ev.RLOBS_MLFLOW_DOWNSAMPLE),
            span_interval_s=env_float(ev.RLOBS_MLFLOW_SPAN_INTERVAL_S, 10.0, minimum=0.001,
                                      env=env),
            max_buffer=env_int(ev.RLOBS_MLFLOW_MAX_BUFFER, 2_000_000, minimum=1000, env=env),
            end_wait_s=env_float(ev.RLOBS_MLFLOW_END_WAIT_S, 4.0, env=env),
            request_timeout_s=env_float(ev.RLOBS_MLFLOW_REQUEST_TIMEOUT_S, 15.0,
                                        minimum=0.1, env=env),
            jsonl_dir=env.get(core_env.RLOBS_JSONL_DIR) or None,
            score_episodes=env_int(ev.RLOBS_MLFLOW_SCORE_EPISODES, 10, minimum=1, env=env),
        )

    @classmethod
    def selected_by_default(cls, env: Mapping[str, str]) -> bool:
        return bool(env.get(ev.MLFLOW_TRACKING_URI))

    def ship_env(self) -> dict[str, str]:
        """This sink's configuration as the variables :meth:`from_env` reads (the
        experiment is not part of it: each run's start records its own)."""
        return {
            ev.MLFLOW_TRACKING_URI: "" if self.embedded else self.tracking_uri,
            core_env.RLOBS_JSONL_DIR: str(self.jsonl_dir.resolve()),
            ev.RLOBS_MLFLOW_DOWNSAMPLE: self.downsample.text(),
            ev.RLOBS_MLFLOW_SPAN_INTERVAL_S: repr(self.span_interval_s),
            ev.RLOBS_MLFLOW_MAX_BUFFER: str(self.max_buffer),
            ev.RLOBS_MLFLOW_REQUEST_TIMEOUT_S: repr(self.request_timeout_s),
            ev.RLOBS_MLFLOW_SCORE_EPISODES: str(self.score_episodes),
        }

    def start_context(self, event: RunStart) -> dict[str, str]:
        """The experiment the run goes to, recorded in its start line."""
        return {"experiment": self._experiment_for(event)}

    def _experiment_for(self, event: RunStart) -> str:
        """The run's own experiment, else its parent's, else this sink's setting."""
        own = event.tags.get("rlobs.experiment")
        parent = self._experiments.get(event.parent_id) if event.parent_id else None
        experiment = own or parent or self.experiment
        self._experiments[event.run_id] = experiment
        while len(self._experiments) > _KEPT:
            self._experiments.popitem(last=False)
        return experiment

    def log_file(self, run_id: str, path: Path) -> None:
        self._logs[run_id] = path

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Build the client and start the sender; no request is made here, so an
        unreachable server does not hold up the run (the sender retries).

        Raises:
            SinkUnavailable: mlflow is not installed.
        """
        require("mlflow", "mlflow")
        from mlflow.tracking import MlflowClient

        # The sender retries with its own backoff; MLflow's default (7 retries with
        # backoff, 120 s timeout) would freeze it for minutes per request instead.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        # MLflow parses this variable as an int: "2.5" would fail every request.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT",
                              str(max(1, round(self.request_timeout_s))))
        # Ending a run would print "View run … at: <tracking URI>" on stdout, a password in
        # the URI included, and fetch the run once more to do so.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        root = None
        if self.embedded:
            self.jsonl_dir.mkdir(parents=True, exist_ok=True)
            root = self.jsonl_dir.resolve() / "mlartifacts"
        with _opening_sqlite(self.tracking_uri):
            client = MlflowClient(tracking_uri=self.tracking_uri)  # opens (maybe creates)
        store = Store(client, root)
        self._sender = Sender(store, max_buffer=self.max_buffer,
                              retry_cap_s=self.max_retry_interval_s)
        self._sender.start()

    def close(self) -> None:
        sender = self._sender
        if sender is None:
            return
        self.flush(wait=False)
        unsent = sender.close(self.end_wait_s)
        runs = sender.pending_runs()
        if unsent or runs or sender.lost:
            logger.warning("mlflow did not get everything; the JSONL logs have it: "
                           "rlobs sync <run>.jsonl --sinks mlflow", unsent_values=unsent,
                           runs_not_ended=runs, lost_values=sender.lost)

    # ------------------------------------------------------------------ hooks

    def on_run_start(self, event: RunStart) -> None:
        assert self._sender is not None
        params, key_tags = map_params(event.params)
        tags = map_tags({**event.tags, "rlobs.name": event.name})
        tags.update(key_tags)
        recorded = (event.sinks or {}).get(self.name) or {}
        experiment = str(recorded.get("experiment") or self._experiment_for(event))
        self._sender.add_run(RunState(event, experiment))
        self._sender.add(event.run_id, [], params, tags)
        self._runs[event.run_id] = _Converter(
            StepPoints(self.downsample), SpanStats(self.span_interval_s),
            result=event.tags.get("rlobs.kind") == "result",
            returns=deque(maxlen=self.score_episodes))

    def on_step(self, event: Step) -> None:
        conv = self._runs.get(event.run_id)
        if conv is None:
            return
        # A record of n env steps follows the one ending at step - n.
        if event.step - event.env_steps != conv.last_step:  # dropped: replay must compare
            conv.tags[GAPS_TAG] = "true"
        conv.last_step = event.step
        conv.steps.convert(event, conv.staged)
        if event.episode_return is not None and math.isfinite(event.episode_return):
            conv.returns.append(event.episode_return)

    def on_span(self, event: Span) -> None:
        conv = self._runs.get(event.run_id)
        if conv is not None:
            conv.spans.add(event, conv.staged)

    def on_run_update(self, event: RunUpdate) -> None:
        assert self._sender is not None
        conv = self._runs.get(event.run_id)
        if conv is None:
            return
        params, key_tags = map_params(event.params)
        tags = {**map_tags(event.tags), **key_tags}
        if "rlobs.description" in event.tags:
            tags.update(native_tags({"rlobs.description": event.tags["rlobs.description"]}))
        conv.scored = conv.scored or "score" in event.metrics
        for payload in _datasets(event.tags):
            self._sender.add_job(event.run_id, "dataset", payload)
        for payload in _models(event.tags):
            self._sender.add_job(event.run_id, "model", payload)
        # Summaries are stamped with the step count so far: two evaluations make a curve.
        step = conv.last_step + 1
        for key, value in event.metrics.items():
            conv.steps.add_point(conv.staged, key, value, event.time_ns // 1_000_000, step)
        self._push(event.run_id, conv)
        self._sender.add(event.run_id, [], params, tags)

    def on_artifact(self, event: Artifact) -> None:
        assert self._sender is not None
        self._sender.add_artifact(event.run_id, event.path, event.artifact_path)

    def on_heartbeat(self, event: Heartbeat) -> None:
        conv = self._runs.get(event.run_id)
        if conv is not None:
            conv.tags[HEARTBEAT_TAG] = str(event.time_ns)

    def on_run_end(self, event: RunEnd) -> None:
        """Queue the final data and the status (the status even if building the final
        data fails); the sender takes it from there, see :meth:`delivery`."""
        assert self._sender is not None
        try:
            conv = self._runs.pop(event.run_id, None)
            if conv is not None:
                self._final(event, conv)
                self._push(event.run_id, conv)
        finally:
            log = self._logs.pop(event.run_id, self.jsonl_dir / f"{event.run_id}.jsonl")
            self._sender.end_run(event, log)

    def delivery(self, run_id: str) -> Delivery:
        """What MLflow does not hold yet of an ended run, and what it refused."""
        if self._sender is None:
            return Delivery()
        return self._sender.delivery(run_id)

    def abandon(self, run_id: str, reason: str) -> None:
        """Give up what is still buffered; end the run with ``rlobs.missing`` = reason."""
        if self._sender is not None:
            self._sender.abandon(run_id, reason)

    def _final(self, event: RunEnd, conv: _Converter) -> None:
        ms, steps = event.time_ns // 1_000_000, event.steps
        conv.steps.finish(conv.staged)
        conv.spans.finish(ms, steps, conv.staged)
        # Curves only: bookkeeping that is not one (the status, what was dropped or left
        # out) is tags, set only when there is something to say.
        finals = {"duration_s": event.duration_s}
        if not conv.result:  # a result has no loop: steps, reward, episodes mean nothing
            finals.update(steps=float(steps), total_reward=event.total_reward,
                          episodes=float(event.episodes))
            if conv.returns and not conv.scored:
                finals["score"] = sum(conv.returns) / len(conv.returns)
        for key, value in finals.items():
            conv.steps.add_point(conv.staged, key, value, ms, steps)
        conv.tags["rlobs.status"] = event.status.value
        if event.error:
            conv.tags["rlobs.error"] = truncate(event.error, MAX_TAG_VALUE)
        counts = {f"rlobs.dropped.{sink}": count for sink, count in event.dropped.items()}
        counts.update({"rlobs.rejected": event.rejected,
                       "rlobs.nonfinite_values": conv.steps.nonfinite.total})
        conv.tags.update({key: str(count) for key, count in counts.items() if count})

    def _push(self, run_id: str, conv: _Converter) -> None:
        assert self._sender is not None
        tags = conv.steps.nonfinite.take_tags()
        if conv.tags:
            tags.update(conv.tags)
            conv.tags = {}
        if conv.staged or tags:
            self._sender.add(run_id, conv.staged, None, map_tags(tags) if tags else None)
            conv.staged = []

    def flush(self, *, wait: bool = True) -> None:
        """Hand staged points to the sender; while it is far behind, wait (backpressure:
        in the shipper the log on disk is the buffer, so nothing is dropped)."""
        sender = self._sender
        if sender is None:
            return
        for run_id, conv in self._runs.items():
            self._push(run_id, conv)
        high = min(_HIGH_WATER, self.max_buffer // 2)
        if wait and sender.buffered > high:
            sender.wait_below(high // 2)

    # ------------------------------------------------------------------ reporting

    def detail(self) -> str | None:
        sender = self._sender
        where = redact_uri(self.tracking_uri)
        if sender is None:
            return f"{where}: not open"
        lost = f", {sender.lost} lost" if sender.lost else ""
        failed = f", {sender.failed_requests} requests failed" if sender.failed_requests else ""
        backoff = sender.backoff
        if backoff.down_since is not None:
            down = time.monotonic() - backoff.down_since
            return (f"{where}: unreachable for {down:.0f}s ({backoff.last_error}); retry in "
                    f"{backoff.wait_s():.1f}s; {sender.buffered} values buffered{lost}{failed}")
        return f"{where}: {sender.sent} values sent, {sender.buffered} buffered{lost}{failed}"

    def probe(self) -> str | None:
        """``GET /health`` of a server, or whether a file or SQLite store can be written."""
        return probe_tracking_uri(self.tracking_uri)

    def viewer_hint(self) -> str:
        """How to look at the runs: the ``mlflow ui`` command for a local store."""
        if self.tracking_uri.startswith(("sqlite:", "file:", "postgresql", "mysql")):
            return f"mlflow ui --backend-store-uri {redact_uri(self.tracking_uri)}"
        return f"MLflow UI: {redact_uri(self.tracking_uri)}"
