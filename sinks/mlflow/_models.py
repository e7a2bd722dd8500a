"""Model registry: register a run's artifact as a model version and point an alias at it.

MLflow 3 deprecates stages (Staging/Production); aliases (``champion``, ``staging``, …)
replace them: an alias names one version and moves when set again.
"""

from __future__ import annotations

from typing import Any

from rlobs import require

from ._probe import sqlite_path
from ._sink import default_tracking_uri


def register_model(
    run_id: str,
    artifact_path: str,
    name: str,
    *,
    alias: str | None = None,
    tags: dict[str, str] | None = None,
    tracking_uri: str | None = None,
    client: Any | None = None,
) -> Any:
    """Register ``runs:/<run_id>/<artifact_path>`` as a new version of model ``name``.

    Args:
        run_id: the MLflow run id (tag ``rlobs.run_id`` finds it from an rlobs id, see
            :func:`mlflow_run_id`).
        artifact_path: the model's path among the run's artifacts.
        name: the registered model's name (created on first use).
        alias: an alias to point at the new version, e.g. ``"champion"``.
        tags: tags of the new version.
        tracking_uri: where the registry is (default: ``MLFLOW_TRACKING_URI``, else the
            embedded store of ``RLOBS_JSONL_DIR``, as the sink writes).
        client: an ``MlflowClient`` to use instead.

    Returns:
        The ``ModelVersion``.

    Raises:
        SinkUnavailable: mlflow is not installed.
        mlflow.exceptions.MlflowException: the registry refused.
    """
    mlflow = require("mlflow", "mlflow")
    if client is None:
        uri = default_tracking_uri(tracking_uri)
        client = mlflow.tracking.MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        try:
            client.create_registered_model(name)
        except mlflow.exceptions.MlflowException:  # created meanwhile by someone else
            client.get_registered_model(name)
    source = f"runs:/{run_id}/{artifact_path.strip('/')}"
    version = client.create_model_version(name, source, run_id=run_id, tags=tags)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return version


def mlflow_run_id(rlobs_run_id: str, *, tracking_uri: str | None = None,
                  client: Any | None = None) -> str | None:
    """The MLflow run id of an rlobs run (found by its ``rlobs.run_id`` tag), if any, on
    ``tracking_uri`` (default: ``MLFLOW_TRACKING_URI``, else the embedded store of
    ``RLOBS_JSONL_DIR``, as the sink writes). A SQLite store that does not exist yet holds
    no run and is not created (its writer, maybe starting this moment, creates it)."""
    mlflow = require("mlflow", "mlflow")
    if client is None:
        uri = default_tracking_uri(tracking_uri)
        store = sqlite_path(uri)
        if store is not None and not store.exists():
            return None
        client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`rlobs.run_id` = '{rlobs_run_id}'",
                              run_view_type=mlflow.entities.ViewType.ALL, max_results=1)
    return str(runs[0].info.run_id) if runs else None
