"""The events a hub fans out to its sinks.

Events are immutable, typed records. They are ``NamedTuple`` classes rather than
frozen dataclasses for one measured reason: building a frozen, slotted dataclass of a
step's eleven fields costs ~2.0 µs on CPython 3.11 (every field goes through
``object.__setattr__``), a ``NamedTuple`` ~0.4 µs, and a step is built on the agent's
hot path. Mapping fields are plain dicts owned by the event: sinks must treat them as
read-only (the hub copies what the user passed in).

Every line of a run's JSONL file is one event plus ``"v"`` (the schema version, see
:data:`SCHEMA_VERSION`) and ``"type"`` (see :data:`EVENT_TYPES`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, NamedTuple

SCHEMA_VERSION = 1
"""Version of the event schema written to every JSONL line as ``"v"``."""


class RunStatus(enum.StrEnum):
    """How a run ended."""

    FINISHED = "finished"
    FAILED = "failed"
    KILLED = "killed"


class RunStart(NamedTuple):
    """A run began. First line of its JSONL file; never dropped.

    ``sinks`` holds what each sink recorded for shipping the run later as it would have
    been shipped live (``{"mlflow": {"experiment": "cartpole"}}``); ``shipper`` names the
    configuration of the shipper process that ships the run live (``None``: no sink runs
    there). A run that continues an existing log (the same ``run_id`` again: a restarted
    job, a resumed training) starts a new segment of it; ``resumed_at`` is then the number
    of steps the log held, and step indices, cumulative reward and episodes continue.
    ``trace`` names the trace the run's spans belong to (its root run's id, see
    :class:`rlobs.TraceIds`): a child run started in this process joins its parent's.
    """

    run_id: str
    name: str
    params: Mapping[str, Any]
    tags: Mapping[str, str]
    parent_id: str | None
    time_ns: int
    sinks: Mapping[str, Any] | None = None
    shipper: str | None = None
    resumed_at: int | None = None
    trace: str | None = None


class Step(NamedTuple):
    """One agent step. ``episode_return``/``episode_length`` are set on the step that ends
    an episode (``done`` or ``truncated``), else ``None``.

    ``env_steps`` is how many env steps the record stands for (a vector step of ``n``
    sub-envs recorded on the env-step axis: ``n``); ``step`` is then the last of them, so
    the next record's index is ``step + 1``. ``episode`` counts the episodes completed
    before this step plus those a vector step ended (``Run.step(episodes=…)``).
    """

    run_id: str
    step: int
    reward: float
    cumulative_reward: float
    metrics: Mapping[str, float]
    done: bool
    truncated: bool
    episode: int
    episode_return: float | None
    episode_length: int | None
    time_ns: int
    env_steps: int = 1


class Span(NamedTuple):
    """A timed section (e.g. ``actor.forward``) inside step ``step`` of a run.

    Spans recorded between step ``k-1`` and step ``k`` belong to step ``k``.
    ``start_ns``/``end_ns`` are wall-clock nanoseconds whose difference is measured with a
    monotonic clock.
    """

    run_id: str
    name: str
    step: int
    start_ns: int
    end_ns: int
    attributes: Mapping[str, Any]
    span_id: int
    parent_span_id: int | None
    error: str | None


class RunUpdate(NamedTuple):
    """Params, tags or summary metrics added to a run after it started; never dropped."""

    run_id: str
    params: Mapping[str, Any]
    tags: Mapping[str, str]
    metrics: Mapping[str, float]
    time_ns: int


class Artifact(NamedTuple):
    """A file the user attached to a run; sinks that store files copy it."""

    run_id: str
    path: str
    artifact_path: str | None
    time_ns: int


class Heartbeat(NamedTuple):
    """Emitted every ``RLOBS_HEARTBEAT_S`` for each open run: the run is alive."""

    run_id: str
    steps: int
    time_ns: int


class RunEnd(NamedTuple):
    """A run ended. Last line of its JSONL file; never dropped.

    ``dropped`` maps sink name to the number of this run's events that sink lost to a
    full queue; ``rejected`` counts metric values that could not be read as numbers.
    """

    run_id: str
    status: RunStatus
    steps: int
    total_reward: float
    episodes: int
    duration_s: float
    error: str | None
    dropped: Mapping[str, int]
    rejected: int
    time_ns: int

    @property
    def completed(self) -> bool:
        """Whether the run ran to its end (status ``finished``)."""
        return self.status is RunStatus.FINISHED


Event = RunStart | Step | Span | RunUpdate | Artifact | Heartbeat | RunEnd
"""Any event a sink can receive."""

EVENT_TYPES: Mapping[str, type[Event]] = {
    "run_start": RunStart,
    "step": Step,
    "span": Span,
    "run_update": RunUpdate,
    "artifact": Artifact,
    "heartbeat": Heartbeat,
    "run_end": RunEnd,
}
"""The ``"type"`` tag of each event in the JSONL schema."""

TYPE_NAMES: Mapping[type[Event], str] = {cls: name for name, cls in EVENT_TYPES.items()}
