"""The public surface: exactly the curated names, and no heavy imports."""

from __future__ import annotations

import subprocess
import sys

import rlobs

PUBLIC = {
    "Artifact", "ConfigError", "ConfigWarning", "Delivery", "Event", "Heartbeat", "Hub",
    "HubClosedError", "InvalidRunId", "Overflow", "RlobsError", "Run", "RunEnd", "RunFileError",
    "RunLog", "RunStart", "RunStatus", "RunUpdate", "SCHEMA_VERSION", "Sink", "SinkStatus",
    "SinkUnavailable", "Span", "SpanScope", "Step", "SyncReport", "UnknownSinkError",
    "current_run", "default_hub", "env_bool", "env_float", "env_int", "environment_variables",
    "event_from_dict", "event_from_line", "event_to_dict", "event_to_line", "flatten_params",
    "is_secret_key", "iter_events", "log_result", "read_run", "redact_uri", "registered_sinks",
    "require", "run", "selected_names", "sync", "wall_ns",
    "RunEntry", "RunTally", "list_runs",
    "TraceIds", "otel_context", "use_otel_context", "set_llm_prices",
}


def test_all_is_exactly_the_public_names() -> None:
    """`rlobs.__all__` lists the public names, no more, no fewer."""
    assert set(rlobs.__all__) == PUBLIC


def test_every_exported_name_exists() -> None:
    """Each name in `__all__` resolves on the module."""
    missing = [name for name in rlobs.__all__ if not hasattr(rlobs, name)]
    assert missing == []


def test_import_rlobs_imports_no_heavy_dependency() -> None:
    """`import rlobs` (and building a default hub) never imports mlflow, torch, OTel or ray."""
    code = (
        "import sys, rlobs\n"
        "hub = rlobs.Hub(['jsonl'], handle_signals=False, heartbeat_s=0)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('mlflow', 'torch', 'opentelemetry', 'gymnasium', 'stable_baselines3', 'ray'))\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
