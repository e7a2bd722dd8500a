"""The MLflow calls the sink makes, through one reused ``MlflowClient`` and explicit run
ids (never the fluent API: its global active run breaks with asyncio tasks and threads).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlobs._log import logger

from ._aggregate import Point
from ._mapping import path_segment

RUN_ID_TAG = "rlobs.run_id"
"""Tag holding the rlobs run id: how replay and restarts find an existing MLflow run."""
HEARTBEAT_TAG = "rlobs.heartbeat_ns"
"""Tag refreshed by every heartbeat; ``rlobs reap`` reads it."""
GAPS_TAG = "rlobs.mlflow.gaps"
"""Set when some step values did not reach MLflow; replay then compares step by step."""

EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
"""Tags of the experiments the sink creates: MLflow 3's UI opens an experiment of this
kind on its runs (its "Model training" view) rather than its GenAI overview."""

Skip = dict[str, "int | set[int]"]
_MODEL_LOCK = threading.Lock()
"""Per metric key: a max step already stored (skip ≤ it) or the exact stored steps."""


class Store:
    """Thin, typed wrapper of the calls made (all may raise MLflow's exceptions).

    Args:
        client: an ``mlflow.tracking.MlflowClient``.
        artifact_root: where new experiments keep artifacts (embedded default only).
    """

    def __init__(self, client: Any, artifact_root: Path | None) -> None:
        from mlflow.entities import Metric, Param, RunTag, ViewType

        self.client = client
        self.artifact_root = artifact_root
        self._metric, self._param, self._tag = Metric, Param, RunTag
        self._all = ViewType.ALL
        self._experiments: dict[str, str] = {}
        self._runs: dict[str, str] = {}

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created when missing."""
        cached = self._experiments.get(name)
        if cached is not None:
            return cached
        found = self.client.get_experiment_by_name(name)
        if found is None:
            location = None
            if self.artifact_root is not None:  # never a path made of the name itself
                location = (self.artifact_root / path_segment(name)).resolve().as_uri()
            try:
                exp_id = str(self.client.create_experiment(name, artifact_location=location,
                                                           tags=dict(EXPERIMENT_TAGS)))
            except Exception as exc:  # another process created it first
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise exc from None
                exp_id = str(found.experiment_id)
        else:
            exp_id = str(found.experiment_id)
        self._experiments[name] = exp_id
        return exp_id

    def find_run(self, experiment_ids: Sequence[str], rlobs_id: str) -> Any | None:
        """The MLflow run tagged with ``rlobs_id`` (mapped ids are answered from memory)."""
        filter_string = f"tags.`{RUN_ID_TAG}` = '{rlobs_id.replace(chr(39), '')}'"
        runs = self.client.search_runs(list(experiment_ids), filter_string=filter_string,
                                       run_view_type=self._all, max_results=1)
        return runs[0] if runs else None

    def find_run_anywhere(self, rlobs_id: str) -> Any | None:
        """The MLflow run tagged with ``rlobs_id`` in any experiment (deleted ones too):
        a run shipped before under another experiment setting is found, not duplicated."""
        from mlflow.entities import ViewType

        ids = [str(e.experiment_id) for e in
               self.client.search_experiments(view_type=ViewType.ALL, max_results=50_000)]
        for first in range(0, len(ids), 100):
            found = self.find_run(ids[first:first + 100], rlobs_id)
            if found is not None:
                return found
        return None

    def one_run(self, experiment_id: str, rlobs_id: str, created: str) -> str:
        """After a retried create: keep the first run carrying ``rlobs_id`` and delete
        the others (a create whose answer was lost, then sent again, makes two)."""
        runs = self.client.search_runs([experiment_id],
                                       filter_string=f"tags.`{RUN_ID_TAG}` = "
                                       f"'{rlobs_id.replace(chr(39), '')}'",
                                       run_view_type=self._all, max_results=10,
                                       order_by=["attributes.start_time ASC"])
        ids = sorted((int(r.info.start_time or 0), str(r.info.run_id)) for r in runs) \
            or [(0, created)]
        keep = ids[0][1]
        for _, other in ids[1:]:
            self.client.delete_run(other)
        self._runs[rlobs_id] = keep
        return keep

    def mlflow_id(self, rlobs_id: str) -> str | None:
        """The MLflow id of a run this process created or resumed."""
        return self._runs.get(rlobs_id)

    def create_run(self, experiment_id: str, rlobs_id: str, name: str, start_ms: int,
                   tags: Mapping[str, str]) -> str:
        """Create a run carrying ``tags`` (which include the rlobs id); returns its id."""
        run = self.client.create_run(experiment_id, start_time=start_ms, tags=dict(tags),
                                     run_name=name)
        run_id = str(run.info.run_id)
        self._runs[rlobs_id] = run_id
        return run_id

    def link_trace(self, run_id: str, trace_hex: str) -> None:
        """Link the OpenTelemetry trace ``trace_hex`` (which may not have arrived yet) to
        the run, so the run's Traces tab lists it; a server without trace links is logged,
        not raised."""
        self.link_traces(run_id, [trace_hex])

    def link_traces(self, run_id: str, trace_hexes: Sequence[str]) -> None:
        """:meth:`link_trace` for up to 100 traces at once."""
        try:
            self.client.link_traces_to_run([f"tr-{t}" for t in trace_hexes], run_id)
        except Exception as exc:
            logger.warning("mlflow traces not linked to their run", mlflow_run_id=run_id,
                           traces=len(trace_hexes), error=f"{type(exc).__name__}: {exc}"[:300])

    def resume(self, rlobs_id: str, run: Any) -> tuple[str, Skip]:
        """Reopen an existing run; returns its id and what it already stores."""
        run_id = str(run.info.run_id)
        self._runs[rlobs_id] = run_id
        if run.info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        stored = run.data.to_proto().metrics
        skip: Skip = {}
        if GAPS_TAG in run.data.tags:
            for metric in stored:
                history = self.client.get_metric_history(run_id, metric.key)
                skip[metric.key] = {int(m.step) for m in history}
        else:
            for metric in stored:
                skip[metric.key] = int(metric.step)
        return run_id, skip

    def log_points(self, run_id: str, points: Iterable[Point]) -> None:
        """One ``log_batch`` of metric points (the caller keeps it within limits)."""
        metric = self._metric
        self.client.log_batch(run_id, metrics=[metric(k, v, ms, s) for k, v, ms, s in points],
                              synchronous=True)

    def log_items(self, run_id: str, params: Sequence[tuple[str, str]],
                  tags: Sequence[tuple[str, str]]) -> None:
        """One ``log_batch`` of params and tags."""
        self.client.log_batch(run_id, params=[self._param(k, v) for k, v in params],
                              tags=[self._tag(k, v) for k, v in tags], synchronous=True)

    def landed(self, run_id: str, points: Sequence[Point]) -> bool:
        """Whether a batch whose reply was lost is stored (a batch is one transaction)."""
        latest = {m.key: int(m.step) for m in
                  self.client.get_run(run_id).data.to_proto().metrics}
        key, _, _, step = points[-1]
        return latest.get(key, -1) >= step

    def upload(self, run_id: str, path: str, artifact_path: str | None) -> None:
        """Upload a file or directory as an artifact."""
        if Path(path).is_dir():
            self.client.log_artifacts(run_id, path, artifact_path)
        else:
            self.client.log_artifact(run_id, path, artifact_path)

    def log_dataset(self, run_id: str, name: str, digest: str, path: str,
                    context: str = "") -> None:
        """Record a dataset input of the run (MLflow's Datasets panel): a local source
        at ``path`` with MLflow's 36-character digest cut of the SHA-256."""
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        source = json.dumps({"uri": Path(path).as_uri() if Path(path).is_absolute()
                             else path})
        dataset = Dataset(name=name, digest=digest[:36], source_type="local", source=source)
        tags = [InputTag("mlflow.data.context", context)] if context else []
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags)])

    def log_model(self, run_id: str, record: Mapping[str, str]) -> None:
        """Log a model that ``rlobs.torch.log_model`` exported as an MLflow model of the
        run (pytorch flavour, signature and input example from the exported examples),
        register it and set its alias — unless the run already has a model of that name
        (a replay)."""
        name = record["name"]
        if self._has_model(run_id, name):
            return
        import mlflow
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        directory = Path(record["path"])
        pt2 = record.get("format") == "pt2"
        module = (torch.export.load(str(directory / "model.pt2")).module() if pt2
                  else torch.load(directory / "model.pt", weights_only=False))
        example = torch.load(directory / "input_example.pt", weights_only=True).numpy()
        output = torch.load(directory / "output_example.pt", weights_only=True).numpy()
        tags = {f"rlobs.{k}": record[k] for k in ("backend", "method", "format",
                                                   "fallback_reason") if record.get(k)}
        with _MODEL_LOCK:  # log_model reads the process-wide tracking URI
            before = mlflow.get_tracking_uri()
            mlflow.set_tracking_uri(self.client.tracking_uri)
            try:
                info = mlflow.pytorch.log_model(
                    module, name=name, run_id=run_id, input_example=example,
                    signature=infer_signature(example, output), tags=tags,
                    pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
                    serialization_format="pt2" if pt2 else "pickle",
                    registered_model_name=record.get("register_as") or None)
            finally:
                mlflow.set_tracking_uri(before)
        if record.get("register_as") and record.get("alias"):
            self.client.set_registered_model_alias(record["register_as"], record["alias"],
                                                   info.registered_model_version)

    def _has_model(self, run_id: str, name: str) -> bool:
        outputs = self.client.get_run(run_id).outputs
        for output in (outputs.model_outputs if outputs is not None else []):
            if self.client.get_logged_model(output.model_id).name == name:
                return True
        return False

    def terminate(self, run_id: str, status: str, end_ms: int) -> None:
        """Set the run's final status and end time."""
        self.client.set_terminated(run_id, status=status, end_time=end_ms)
