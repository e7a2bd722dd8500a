"""The sink contract: a base class whose hooks do nothing unless overridden.

A sink is told *what* happened; its host decides *when*. The host is either the training
process (an in-process worker fed by the run-log writer) or the log directory's shipper
process (a worker that tails the run logs), see docs/core.md. Either way each sink gets
its own worker: its hooks run on that worker's thread, one call at a time, in event order,
so a sink may block (network, disk) without locking: it never blocks the agent loop or
another sink. An exception from a hook is caught at the host's boundary, logged and
counted; the sink keeps receiving later events.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ._events import Artifact, Heartbeat, RunEnd, RunStart, RunUpdate, Span, Step
from ._exceptions import SinkUnavailable


class Overflow(enum.StrEnum):
    """What the hub does with a step or span when a sink's queue is full."""

    DROP = "drop"
    """Drop it and count it (visible in ``Hub.status()`` and in the run's ``RunEnd``)."""
    BLOCK = "block"
    """Make the producer wait up to ``Sink.block_timeout_s`` for room, then drop and count."""


@dataclass(frozen=True)
class Delivery:
    """What a sink still owes for a run whose end it received (see :meth:`Sink.delivery`).

    - ``pending``: values or events handed to the sink and not yet confirmed stored.
    - ``lost``: values it gave up on for good (e.g. rejected by its back end), counted.
    - ``detail``: why, in a few words (``"312 values rejected: HTTP 400"``).
    """

    pending: int = 0
    lost: int = 0
    detail: str | None = None


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
    - ``shipper``: ``True`` runs the sink in the log directory's shipper process rather
      than in the training process, when :meth:`ship_env` says how to rebuild it there
      (heavy SDKs belong there: their Python never holds the training loop's GIL).
    - ``run_log``: ``True`` marks the sink that selects and configures the run log (the
      ``jsonl`` sink): the hub writes the log itself and never calls its hooks.
    """

    name: str = "sink"
    overflow: Overflow = Overflow.DROP
    capacity: int | None = None
    block_timeout_s: float = 1.0
    wants_spans: bool = True
    flush_interval_s: float = 0.05
    enabled: bool = True
    shipper: bool = False
    run_log: bool = False

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

    def probe(self) -> str | None:
        """Check now, for ``rlobs status``, that what the sink writes to is reachable:
        ``None`` when it is (or there is nothing to check), else why not, in a few words.
        Called from the command line, never by the hub; bound it to a few seconds."""
        return None

    def ship_env(self) -> Mapping[str, str] | None:
        """Variables from which :meth:`from_env` rebuilds this very sink in the shipper
        process, or ``None`` if it cannot be rebuilt there (it then runs in-process).

        Only the sink's own configuration belongs here: processes whose shipped sinks
        give equal variables share one shipper per log directory.
        """
        return None

    def start_context(self, event: RunStart) -> Mapping[str, Any] | None:
        """What to record for this sink in the run's start line (``RunStart.sinks``), so
        that shipping the log later — live or by ``rlobs sync`` — does what this process
        would have done (the MLflow sink records its experiment). Called in the training
        process: keep it cheap and import-free."""
        return None

    def log_file(self, run_id: str, path: Path) -> None:
        """Where the run's log lives (called just before its start is delivered), for
        sinks that store it (the MLflow sink uploads it as an artifact)."""

    def delivery(self, run_id: str) -> Delivery:
        """What the sink still owes for an ended run; the host waits (bounded) until
        ``pending`` is 0. The default: nothing once ``on_run_end`` returned."""
        return Delivery()

    def abandon(self, run_id: str, reason: str) -> None:
        """Stop trying to deliver an ended run's data (the host's wait ran out)."""


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
