"""rlobs: an async observability hub for agent runs.

An agent loop calls cheap hooks on a :class:`Run`; a :class:`Hub` writes each run's log
(JSONL, encoded in C off the agent's thread) and gets every sink its events — MLflow,
OpenTelemetry and other heavy sinks from a shipper process that tails the logs, light
ones (console, your own) from in-process workers — and guarantees every run an end on
every exit path.

``import rlobs`` imports no sink SDK (mlflow, opentelemetry) and no torch.
"""

from __future__ import annotations

from . import environment_variables
from ._clock import wall_ns
from ._codec import from_dict as event_from_dict
from ._codec import from_line as event_from_line
from ._codec import to_dict as event_to_dict
from ._codec import to_text as event_to_line
from ._events import (
    SCHEMA_VERSION,
    Artifact,
    Event,
    Heartbeat,
    RunEnd,
    RunStart,
    RunStatus,
    RunUpdate,
    Span,
    Step,
)
from ._exceptions import (
    ConfigError,
    ConfigWarning,
    HubClosedError,
    InvalidRunId,
    RlobsError,
    RunFileError,
    SinkUnavailable,
    UnknownSinkError,
)
from ._hub import Hub, default_hub, run
from ._llm import set_llm_prices
from ._params import flatten_params, is_secret_key, redact_uri
from ._reader import RunLog, iter_events, read_run
from ._registry import registered_sinks, selected_names
from ._result import log_result
from ._run import Run, current_run
from ._settings import env_bool, env_float, env_int
from ._sink import Delivery, Overflow, Sink, require
from ._span import SpanScope
from ._sync import SyncReport, sync
from ._tally import RunEntry, RunTally, list_runs
from ._traceids import TraceIds, otel_context, use_otel_context
from ._worker import SinkStatus

__all__ = [
    "SCHEMA_VERSION",
    "Artifact",
    "ConfigError",
    "ConfigWarning",
    "Delivery",
    "Event",
    "Heartbeat",
    "Hub",
    "HubClosedError",
    "InvalidRunId",
    "Overflow",
    "RlobsError",
    "Run",
    "RunEnd",
    "RunEntry",
    "RunFileError",
    "RunLog",
    "RunStart",
    "RunStatus",
    "RunTally",
    "RunUpdate",
    "Sink",
    "SinkStatus",
    "SinkUnavailable",
    "Span",
    "SpanScope",
    "Step",
    "SyncReport",
    "TraceIds",
    "UnknownSinkError",
    "current_run",
    "default_hub",
    "env_bool",
    "env_float",
    "env_int",
    "environment_variables",
    "event_from_dict",
    "event_from_line",
    "event_to_dict",
    "event_to_line",
    "flatten_params",
    "is_secret_key",
    "iter_events",
    "list_runs",
    "log_result",
    "otel_context",
    "read_run",
    "redact_uri",
    "registered_sinks",
    "require",
    "run",
    "selected_names",
    "set_llm_prices",
    "sync",
    "use_otel_context",
    "wall_ns",
]
