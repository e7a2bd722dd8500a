"""``rlobs reap`` and the model registry helper, against a real MLflow server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from mlflow_support import client, experiment_name, find_run
from servers import MlflowServer

import rlobs
from rlobs._cli import main
from sinks.mlflow import MlflowSink, mlflow_run_id, reap, register_model

pytestmark = pytest.mark.slow


def _running(c: Any, exp: str, rlobs_id: str | None, silent_s: float) -> str:
    """A RUNNING run whose last heartbeat was ``silent_s`` ago."""
    found = c.get_experiment_by_name(exp)
    exp_id = found.experiment_id if found else c.create_experiment(exp)
    tags = {"rlobs.heartbeat_ns": str(time.time_ns() - int(silent_s * 1e9))}
    if rlobs_id:
        tags["rlobs.run_id"] = rlobs_id
    return str(c.create_run(exp_id, tags=tags).info.run_id)


def test_reap_kills_only_silent_rlobs_runs(mlflow_server: MlflowServer) -> None:
    """Stale rlobs runs become KILLED; fresh ones and other tools' runs stay RUNNING."""
    c, exp = client(mlflow_server.url), experiment_name()
    stale = _running(c, exp, "r-stale", 3600)
    fresh = _running(c, exp, "r-fresh", 1)
    foreign = _running(c, exp, None, 3600)
    reaped = reap(c, 600, experiments=[exp])
    assert [r.mlflow_run_id for r in reaped] == [stale]
    assert c.get_run(stale).info.status == "KILLED"
    assert c.get_run(fresh).info.status == "RUNNING"
    assert c.get_run(foreign).info.status == "RUNNING"


def test_reap_dry_run_changes_nothing(mlflow_server: MlflowServer) -> None:
    """``--dry-run`` reports the dead run and leaves it RUNNING."""
    c, exp = client(mlflow_server.url), experiment_name()
    stale = _running(c, exp, "r-dry", 3600)
    assert [r.mlflow_run_id for r in reap(c, 600, experiments=[exp], dry_run=True)] == [stale]
    assert c.get_run(stale).info.status == "RUNNING"


def test_reap_cli_prints_what_it_changed(mlflow_server: MlflowServer,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """``rlobs reap`` names each run it marked KILLED and returns 0."""
    c, exp = client(mlflow_server.url), experiment_name()
    stale = _running(c, exp, "r-cli", 3600)
    code = main(["reap", "--older-than", "60", "--experiment", exp,
                 "--tracking-uri", mlflow_server.url])
    out = capsys.readouterr().out
    assert code == 0
    assert f"marked KILLED: {stale}" in out and "1 run(s) marked KILLED" in out


def test_register_model_sets_alias(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    """A run's artifact is registered as a model version the alias points at."""
    model = tmp_path / "policy"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\x00" * 16)
    sink = MlflowSink(mlflow_server.url, experiment_name())
    with rlobs.Hub([sink], heartbeat_s=0) as hub, hub.run("reg-a") as run:
        run.step(1.0)
        run.log_artifact(model, "policy")
    assert hub.flush(60)
    c = client(mlflow_server.url)
    mlflow_id = mlflow_run_id(run.run_id, client=c)
    assert mlflow_id == find_run(c, run.run_id).info.run_id
    name = f"policy-{experiment_name()}"
    version = register_model(mlflow_id, "policy", name, alias="champion", client=c)
    by_alias = c.get_model_version_by_alias(name, "champion")
    assert by_alias.version == version.version and by_alias.run_id == mlflow_id
