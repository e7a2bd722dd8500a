"""Environment variables rlobs reads. Explicit constructor arguments win over them.

Bad values are reported with a :class:`~rlobs.ConfigWarning` and the default is used.
Each sink documents its own variables beside its code (``sinks/``).
"""

from __future__ import annotations

RLOBS_SINKS = "RLOBS_SINKS"
"""Comma-separated sink names (``jsonl,mlflow,otel``) or ``none``. Unset: ``jsonl`` plus
every sink whose own standard variable is set (``MLFLOW_TRACKING_URI`` selects mlflow,
``OTEL_EXPORTER_OTLP_ENDPOINT``/``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` select otel)."""

RLOBS_JSONL_DIR = "RLOBS_JSONL_DIR"
"""Directory of the JSONL run logs, one ``<run_id>.jsonl`` per run. Default ``./rlobs-runs``."""

RLOBS_JSONL_FSYNC = "RLOBS_JSONL_FSYNC"
"""``1`` to fsync each run's file when the run ends (survives power loss). Default ``0``."""

RLOBS_END_TIMEOUT_S = "RLOBS_END_TIMEOUT_S"
"""Seconds the hub waits for sinks to take a run's end (and to close) before abandoning
the ones that hang. Default ``5``."""

RLOBS_OPEN_TIMEOUT_S = "RLOBS_OPEN_TIMEOUT_S"
"""Seconds the hub waits for sinks to open at start; a sink still opening is marked
unavailable. Default ``60``."""

RLOBS_HEARTBEAT_S = "RLOBS_HEARTBEAT_S"
"""Seconds between heartbeat events of each open run; ``0`` disables. Default ``10``."""

RLOBS_SYSTEM_METRICS_S = "RLOBS_SYSTEM_METRICS_S"
"""Seconds between samples of system metrics (CPU, memory, disk, network; GPUs with
nvidia-ml-py), recorded on every open top-level run as ``system/…`` summaries; ``0``
disables. Sampled on a thread of its own, never the agent's; needs psutil (installed by
``rlobs[all]`` and ``rlobs[system]``), else off. Default ``10``."""

RLOBS_QUEUE_SIZE = "RLOBS_QUEUE_SIZE"
"""Events each sink's queue holds (sinks may declare their own). Default ``65536``."""

RLOBS_HANDLE_SIGNALS = "RLOBS_HANDLE_SIGNALS"
"""``0`` stops the hub from installing its SIGTERM handler (runs are still closed as
``killed`` at interpreter exit). Default ``1``."""

RLOBS_ACTOR_BACKEND = "RLOBS_ACTOR_BACKEND"
"""Backend of actors wrapped by :func:`rlobs.torch.instrument` when none is passed:
``auto``, ``onnx``, ``export``, ``script``, ``compile``, ``cudagraph`` or ``eager``.
Default ``auto``."""

RLOBS_ACTOR_CACHE_DIR = "RLOBS_ACTOR_CACHE_DIR"
"""Directory where the ``export`` actor backend keeps its compiled packages (one per
module code, weights, input shape and torch version), so a restarted process loads them
instead of compiling again. Default ``~/.cache/rlobs/actors``."""

RLOBS_JSONL_MODE = "RLOBS_JSONL_MODE"
"""Permission bits of new run logs, in octal (the umask still applies). Default ``600``:
a run log may hold params and command lines only its owner should read."""

RLOBS_SHIPPER = "RLOBS_SHIPPER"
"""``0`` runs every sink inside the training process instead of in the log directory's
shipper process (for platforms that cannot start one). Default ``1``."""

RLOBS_SHIPPER_LINGER_S = "RLOBS_SHIPPER_LINGER_S"
"""Seconds the shipper keeps trying to deliver a run after its end (an unreachable or
failing back end); then it ends the run in the sink with a tag saying what is missing
and records it incomplete, for ``rlobs sync`` to finish. Default ``300``."""

RLOBS_SHIPPER_IDLE_S = "RLOBS_SHIPPER_IDLE_S"
"""Seconds the shipper stays once everything is shipped and no writer is alive, before
it exits (a new run starts a new one). Default ``5``."""

RLOBS_PARENT_ID = "RLOBS_PARENT_ID"
"""The parent run id that a worker's run nests under when it is given none
(:func:`rlobs.integrations.ray.worker_run`; set on the driver by
:func:`rlobs.integrations.ray.worker_env`). Default: no parent."""

RLOBS_OTEL_CONTEXT = "RLOBS_OTEL_CONTEXT"
"""``1``: inside ``with run:`` the current OpenTelemetry context follows the run
(:func:`rlobs.otel_context`), so OpenTelemetry instrumentation (an instrumented HTTP or LLM
client) nests its spans under the rlobs span or step it runs in, in the run's trace. Needs
``opentelemetry-api``. Default ``0``."""

RLOBS_LLM_PRICES = "RLOBS_LLM_PRICES"
"""LLM prices for the cost of calls, JSON ``{"model": [usd_per_1M_input_tokens,
usd_per_1M_output_tokens]}``; :func:`rlobs.set_llm_prices` wins. Unset: no cost."""

RLOBS_CAPTURE_MAX_CHARS = "RLOBS_CAPTURE_MAX_CHARS"
"""Longest captured input/output text of a span (``@traced(capture=True)``,
``span.io``), in characters. Default ``4096``."""
