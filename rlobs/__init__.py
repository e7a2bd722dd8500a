"""rlobs: an async observability hub for agent runs.

An agent loop calls cheap hooks on a :class:`Run`; a :class:`Hub` fans the events out to
independent sinks (JSONL, MLflow, OpenTelemetry, your own), each behind its own bounded
queue and worker, and guarantees every run an end on every exit path.

``import rlobs`` imports no sink SDK (mlflow, opentelemetry) and no torch.
"""

from __future__ import annotations

from . import environment_variables
from ._clock import wall_ns
from ._codec import from_dict as event_from_dict
from ._codec import from_line as event_from_line
from ._codec import to_dict as event_to_dict
from ._codec import to_line as event_to_line
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
    RlobsError,
    RunFileError,
    SinkUnavailable,
    UnknownSinkError,
)
from ._hub import Hub, default_hub, run
from ._params import flatten_params, is_secret_key, redact_uri
from ._reader import RunLog, iter_events, read_run
from ._registry import registered_sinks, selected_names
from ._result import log_result
from ._run import Run, current_run
from ._settings import env_bool, env_float, env_int
from ._sink import Overflow, Sink, require
from ._span import SpanScope
from ._worker import SinkStatus

__all__ = [
    "SCHEMA_VERSION",
    "Artifact",
    "ConfigError",
    "ConfigWarning",
    "Event",
    "Heartbeat",
    "Hub",
    "HubClosedError",
    "Overflow",
    "RlobsError",
    "Run",
    "RunEnd",
    "RunFileError",
    "RunLog",
    "RunStart",
    "RunStatus",
    "RunUpdate",
    "Sink",
    "SinkStatus",
    "SinkUnavailable",
    "Span",
    "SpanScope",
    "Step",
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
    "log_result",
    "read_run",
    "redact_uri",
    "registered_sinks",
    "require",
    "run",
    "selected_names",
    "wall_ns",
]
