"""MLflow sink: batched, crash-proof tracking of rlobs runs, with replay and registry.

- :class:`MlflowSink` (selected by ``RLOBS_SINKS=mlflow`` or a set ``MLFLOW_TRACKING_URI``)
  logs params, tags, per-step metrics (``log_batch`` in chunks, retried through outages),
  span percentiles, status and the run's JSONL log. Without a tracking URI it writes to
  the embedded SQLite store ``<RLOBS_JSONL_DIR>/mlflow.db``.
- ``rlobs sync RUN.jsonl --sinks mlflow`` resumes the run tagged ``rlobs.run_id`` and
  sends only what MLflow lacks (the shipper process runs the same path live).
- ``rlobs reap`` (:func:`register_cli`, :func:`reap`) ends runs whose heartbeat stopped.
- ``rlobs compare-mlflow EXPERIMENT... --by KEY`` (:func:`register_compare`,
  :func:`compare_mlflow`) compares runs across seeds from their MLflow history.
- :func:`register_model` registers a run's artifact and sets an alias.

Importing this package does not import mlflow; opening the sink does.
"""

from __future__ import annotations

from . import environment_variables
from ._aggregate import Downsample
from ._compare import compare_mlflow, register_compare
from ._models import mlflow_run_id, register_model
from ._reap import Reaped, reap, register_cli
from ._sink import MlflowSink, embedded_uri

__all__ = [
    "Downsample",
    "MlflowSink",
    "Reaped",
    "compare_mlflow",
    "embedded_uri",
    "environment_variables",
    "mlflow_run_id",
    "reap",
    "register_cli",
    "register_compare",
    "register_model",
]
