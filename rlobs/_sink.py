"""The sink contract: a base class whose hooks do nothing unless overridden.

A sink is told *what* happened; the hub decides *when*. Each sink gets its own bounded
queue and worker. Its hooks run on that worker's thread, one call at a time, in event
order, so a sink may block (network, disk) without locking: it never blocks the agent
loop or another sink. An exception from a hook is caught at the hub's boundary, logged
and counted; the sink keeps receiving later events.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Mapping
from types import ModuleType

from ._events import Artifact, Heartbeat, RunEnd, RunStart, RunUpdate, Span, Step
from ._exceptions import SinkUnavailable


class Overflow(enum.StrEnum):
    """What the hub does with a step or span when a sink's queue is full."""

    DROP = "drop"
    """Drop it and count it (visible in ``Hub.status()`` and in the run's ``RunEnd``)."""
    BLOCK = "block"
    """Make the producer wait up to ``Sink.block_timeout_s`` for room, then drop and count."""


class Sink:
    """Base class of every sink. Override only the hooks you need.

    Attributes (set on the class or the instance) tune how the hub feeds the sink:

    - ``name``: the name it is registered and reported under.
    - ``overflow``: :class:`Overflow` policy when its queue is full (lifecycle events —
      run start/end, updates, artifacts, heartbeats — are never dropped).
    - ``capacity``: queue size in events; ``None`` uses ``RLOBS_QUEUE_SIZE``.
    - ``block_timeout_s``: longest wait of a producer under ``Overflow.BLOCK``.
    - ``wants_spans``: ``False`` keeps spans out of this sink's queue.
    - ``flush_interval_s``: how long events may wait before the worker delivers them;
      ``flush`` is called after every delivered batch.
    - ``enabled``: ``False`` (e.g. set by ``from_env`` when the sink's own "disabled"
      variable is on) keeps the sink selected but never opened nor fed.
    """

    name: str = "sink"
    overflow: Overflow = Overflow.DROP
    capacity: int | None = None
    block_timeout_s: float = 1.0
    wants_spans: bool = True
    flush_interval_s: float = 0.05
    enabled: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Sink:
        """Build the sink from environment variables (its own documented ones)."""
        return cls()

    @classmethod
    def selected_by_default(cls, env: Mapping[str, str]) -> bool:
        """Whether the sink is on when ``RLOBS_SINKS`` is unset (its own variable is set)."""
        return False

    def open(self) -> None:
        """Prepare to receive events. Raise :class:`SinkUnavailable` (or anything) to be
        marked unavailable; the hub carries on without the sink."""

    def on_run_start(self, event: RunStart) -> None:
        """A run started."""

    def on_step(self, event: Step) -> None:
        """A step was recorded."""

    def on_span(self, event: Span) -> None:
        """A span ended (only when ``wants_spans``)."""

    def on_run_update(self, event: RunUpdate) -> None:
        """Params, tags or summary metrics were added to a run."""

    def on_artifact(self, event: Artifact) -> None:
        """A file was attached to a run."""

    def on_heartbeat(self, event: Heartbeat) -> None:
        """A run is still alive."""

    def on_run_end(self, event: RunEnd) -> None:
        """A run ended. Called exactly once for every run whose start this sink saw."""

    def flush(self) -> None:
        """Push buffered data out; called after every delivered batch of events."""

    def close(self) -> None:
        """Release resources; called once when the hub closes."""

    def detail(self) -> str | None:
        """A short, human-readable state for ``Hub.status()`` (e.g. "retrying in 4s")."""
        return None


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency of a sink.

    Args:
        module: the module to import, e.g. ``"mlflow"``.
        extra: the rlobs extra that installs it, e.g. ``"mlflow"``.

    Returns:
        The imported module.

    Raises:
        SinkUnavailable: the module is not installed; the message gives the pip command.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SinkUnavailable(
            f"{module} is not installed: pip install \"rlobs[{extra}]\" ({exc})"
        ) from exc
