"""One reading of a run's truth, shared by ``show``, ``tail``, ``plot``, ``compare`` and
the console sink, so that they agree on steps, episodes, summaries and children.

A :class:`RunTally` is fed events in log order (:meth:`RunTally.add`) or read from a log
(:meth:`RunTally.read`). Its rules:

- **Episodes** are counted from the steps, never from ``RunEnd.episodes`` alone: a step
  with ``env/<i>/episode_return`` metrics (a vector env) ends one episode per sub-env; a
  vector step without per-env metrics ends ``episodes_ended`` episodes of mean return
  ``episode_return``; otherwise a step ends one episode when its ``episode_return`` is
  set.
- **Segments**: a log whose ``run_id`` was reused (a resumed job) holds one run start
  per segment; step indices continue across them, so steps are the last step's index
  + 1, durations add up, drops add up, and the status is the last segment's.
- **Summaries** are the metrics of run updates (later values win); ``log_result``'s
  numeric results are among them, its other results are the tags ``result.<key>``.
- **Children** are the runs of the same directory whose parent is this run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._events import Artifact, Event, RunEnd, RunStart, RunUpdate, Span, Step
from ._exceptions import RunFileError
from ._follow import first_event
from ._reader import RunLog, read_run

RESULT_PREFIX = "result."
"""Tags that ``log_result`` makes of results that are not numbers."""


def episode_returns(step: Step) -> list[float]:
    """The returns of the episodes a step ends (none, one, or one per vector sub-env).

    A new list each call: the caller may keep it."""
    metrics = step.metrics
    if metrics:
        per_env = [v for k, v in metrics.items()
                   if k.startswith("env/") and k.endswith("/episode_return")]
        if per_env:
            return per_env
        ended, mean = metrics.get("episodes_ended"), metrics.get("episode_return")
        if step.episode_return is None and ended and mean is not None:
            return [mean] * int(ended)
    return [] if step.episode_return is None else [step.episode_return]


@dataclass
class RunTally:
    """What one run log says, segment by segment (see the module docstring)."""

    run_id: str = ""
    name: str = ""
    path: Path | None = None
    parent_id: str | None = None
    started_ns: int = 0
    segment_ns: int = 0
    """When the last segment started."""
    last_ns: int = 0
    segments: int = 0
    steps: int = 0
    total_reward: float = 0.0
    episode_count: int = 0
    """Episodes ended (vector envs: one per sub-env episode)."""
    episodes: list[tuple[int, float]] = field(default_factory=list)
    """(step index, return) of every episode, in order (kept when ``history``)."""
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    summaries: dict[str, float] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    spans: int = 0
    metric_keys: dict[str, None] = field(default_factory=dict)
    """Step metric names in order of first appearance (per-env keys left out; kept when
    ``history``)."""
    end: RunEnd | None = None
    """The last segment's end, ``None`` while it has none (live, or killed hard)."""
    ended_s: float = 0.0
    dropped: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    history: bool = True
    """Keep every episode and metric name (``False``: counts only, for live views)."""

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> RunTally:
        """The tally of the run log at ``path``.

        Raises:
            RunFileError: not a run log.
        """
        return cls.of(read_run(path))

    @classmethod
    def of(cls, log: RunLog) -> RunTally:
        """The tally of a run log already read."""
        tally = cls(path=log.path)
        for event in log.events:
            tally.add(event)
        return tally

    def add(self, event: Event) -> None:
        """Account one event (in log order)."""
        if isinstance(event, Step):
            self.add_step(event)
            self.last_ns = max(self.last_ns, event.time_ns)
            return
        if isinstance(event, Span):
            self.spans += 1
            self.last_ns = max(self.last_ns, event.end_ns)
            return
        if isinstance(event, RunStart):
            self._start(event)
        elif isinstance(event, RunUpdate):
            self.params.update(event.params)
            self.tags.update(event.tags)
            self.summaries.update(event.metrics)
        elif isinstance(event, RunEnd):
            self._end(event)
        elif isinstance(event, Artifact):
            self.artifacts.append(event.artifact_path or os.path.basename(event.path))
        self.last_ns = max(self.last_ns, event.time_ns)

    def add_step(self, step: Step) -> Sequence[float]:
        """Account one step (the console's hot path: kept lean); returns the returns of
        the episodes it ends."""
        self.steps = step.step + 1
        self.total_reward = step.cumulative_reward
        if not step.metrics and step.episode_return is None:
            return ()
        returns = episode_returns(step)
        if returns:
            self.episode_count += len(returns)
            if self.history:
                self.episodes.extend((step.step, ret) for ret in returns)
        if self.history and step.metrics:
            keys = self.metric_keys
            for key in step.metrics:
                if key not in keys and not key.startswith("env/"):
                    keys[key] = None
        return returns

    def _start(self, start: RunStart) -> None:
        if not self.segments:
            self.run_id, self.name, self.parent_id = start.run_id, start.name, start.parent_id
            self.started_ns = start.time_ns
        self.segments += 1
        self.segment_ns = start.time_ns
        self.params.update(start.params)
        self.tags.update(start.tags)
        self.end = None

    def _end(self, end: RunEnd) -> None:
        self.end = end
        self.ended_s += end.duration_s
        self.steps = max(self.steps, end.steps)
        if end.steps >= self.steps:
            self.total_reward = end.total_reward
        for sink, count in end.dropped.items():
            self.dropped[sink] = self.dropped.get(sink, 0) + count
        self.rejected += end.rejected

    @property
    def status(self) -> str | None:
        """How the last segment ended (``finished``/``failed``/``killed``), or ``None``."""
        return self.end.status.value if self.end else None

    @property
    def duration_s(self) -> float:
        """Seconds the run ran: its ended segments, plus a live last one so far."""
        if self.end is not None or not self.segments:
            return self.ended_s
        return self.ended_s + max(0, self.last_ns - self.segment_ns) / 1e9

    @property
    def results(self) -> dict[str, Any]:
        """``log_result``'s results: the summaries and the ``result.<key>`` tags."""
        out: dict[str, Any] = dict(self.summaries)
        out.update({k[len(RESULT_PREFIX):]: v for k, v in self.tags.items()
                    if k.startswith(RESULT_PREFIX)})
        return out

    def value(self, key: str) -> str | None:
        """The run's tag or param ``key`` (tags first; later updates win), as text."""
        if key in self.tags:
            return self.tags[key]
        if key in self.params:
            return str(self.params[key])
        return None

    def children(self) -> list[RunEntry]:
        """The runs of the same directory whose parent is this run, oldest first."""
        if self.path is None:
            return []
        return [e for e in list_runs(self.path.parent) if e.parent_id == self.run_id]


@dataclass(frozen=True)
class RunEntry:
    """A run log of a directory, as its first line describes it."""

    path: Path
    run_id: str
    name: str
    parent_id: str | None
    started_ns: int


def list_runs(directory: str | os.PathLike[str]) -> list[RunEntry]:
    """The run logs of ``directory``, oldest start first (files that are not run logs
    are left out).

    Raises:
        RunFileError: ``directory`` is not a directory.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise RunFileError(f"no such directory: {folder}")
    out = []
    for path in folder.glob("*.jsonl"):
        start = first_event(path)
        if start is not None:
            out.append(RunEntry(path, start.run_id, start.name, start.parent_id,
                                start.time_ns))
    return sorted(out, key=lambda e: (e.started_ns, e.path.name))



LATEST = "latest"
"""The run argument that names the latest run of the log directory."""


def log_dir(env: Mapping[str, str] | None = None) -> Path:
    """The log directory of the environment (``RLOBS_JSONL_DIR``, default ``rlobs-runs``)
    of ``env`` (default ``os.environ``)."""
    from . import environment_variables as ev

    return Path((os.environ if env is None else env).get(ev.RLOBS_JSONL_DIR) or "rlobs-runs")


def latest_run(directory: str | os.PathLike[str]) -> Path:
    """The run log of ``directory`` that started last.

    Raises:
        RunFileError: no directory there, or no run log in it.
    """
    runs = list_runs(directory)
    if not runs:
        raise RunFileError(f"no run logs in {directory}")
    return runs[-1].path


def resolve_run(spec: str | os.PathLike[str]) -> Path:
    """The run log that ``spec`` names: a ``.jsonl`` file, a directory (its latest run),
    ``latest`` (the latest run of :func:`log_dir`) or a run id in :func:`log_dir`.

    Raises:
        RunFileError: nothing there is a run log; the message says what was looked for.
    """
    text = os.fspath(spec)
    if text == LATEST:
        return latest_run(log_dir())
    path = Path(text)
    if path.is_dir():
        return latest_run(path)
    if path.is_file():
        return path
    by_id = log_dir() / f"{text}.jsonl"
    if os.sep not in text and by_id.is_file():
        return by_id
    hint = "" if path.parent.is_dir() else f" (no directory {path.parent})"
    raise RunFileError(f"no such run log: {path}{hint}; give a run's .jsonl file, a "
                       f"directory of them, a run id in {log_dir()}, or {LATEST!r}")
