"""What MLflow's own UI shows of an rlobs run: experiment choice, source, user,
description, run names — read back from a real ``mlflow server``."""

from __future__ import annotations

import getpass

import pytest
from mlflow_support import client, experiment_name, find_run
from servers import MlflowServer

import rlobs
from sinks.mlflow import MlflowSink

pytestmark = pytest.mark.slow


def _ship(server: MlflowServer, sink: MlflowSink, name: str = "ppo-cartpole",
          **kwargs: object) -> rlobs.Run:
    with rlobs.Hub([sink], heartbeat_s=0) as hub, \
            hub.run(name, **kwargs) as run:  # type: ignore[arg-type]
        run.step(1.0, done=True)
    assert hub.flush(60)
    return run


def _experiment_of(server: MlflowServer, run: rlobs.Run) -> str:
    c = client(server.url)
    return str(c.get_experiment(find_run(c, run.run_id).info.experiment_id).name)


def test_experiment_order_argument_rlobs_variable_mlflow_variable(
    mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run's own experiment > RLOBS_MLFLOW_EXPERIMENT > MLFLOW_EXPERIMENT_NAME."""
    ours, theirs, own = experiment_name(), experiment_name(), experiment_name()
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", theirs)
    run = _ship(mlflow_server, MlflowSink(mlflow_server.url))
    assert _experiment_of(mlflow_server, run) == theirs
    monkeypatch.setenv("RLOBS_MLFLOW_EXPERIMENT", ours)
    run = _ship(mlflow_server, MlflowSink(mlflow_server.url))
    assert _experiment_of(mlflow_server, run) == ours
    run = _ship(mlflow_server, MlflowSink(mlflow_server.url), experiment=own)
    assert _experiment_of(mlflow_server, run) == own


def test_default_experiment_is_rlobs_not_the_name_prefix(mlflow_server: MlflowServer) -> None:
    """With nothing set, runs go to the experiment ``rlobs``, whatever their name."""
    run = _ship(mlflow_server, MlflowSink(mlflow_server.url), name="halfcheetah-sac-1")
    assert _experiment_of(mlflow_server, run) == "rlobs"


def test_created_experiment_opens_on_its_runs(mlflow_server: MlflowServer) -> None:
    """An experiment the sink creates is of MLflow 3's training kind, which its UI opens
    on the runs table (not the GenAI overview)."""
    name = experiment_name()
    _ship(mlflow_server, MlflowSink(mlflow_server.url, name))
    experiment = client(mlflow_server.url).get_experiment_by_name(name)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_source_user_commit_and_description(mlflow_server: MlflowServer) -> None:
    """Source name/type, the user (from the login, or the user's ``mlflow.user`` tag,
    which sets the run's user id) and the description are MLflow's own fields."""
    sink = MlflowSink(mlflow_server.url, experiment_name())
    run = _ship(mlflow_server, sink, description="baseline with default lr")
    found = find_run(client(mlflow_server.url), run.run_id)
    tags = found.data.tags
    assert tags["mlflow.note.content"] == "baseline with default lr"
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"]
    assert tags["mlflow.user"] == getpass.getuser() == found.info.user_id
    if "rlobs.git.commit" in tags:
        assert tags["mlflow.source.git.commit"] == tags["rlobs.git.commit"]
    run = _ship(mlflow_server, sink, tags={"mlflow.user": "alice"})
    found = find_run(client(mlflow_server.url), run.run_id)
    assert found.data.tags["mlflow.user"] == "alice" == found.info.user_id


def test_seeds_are_told_apart_by_run_name(mlflow_server: MlflowServer) -> None:
    """Two seeds of one configuration get distinct MLflow run names."""
    sink = MlflowSink(mlflow_server.url, experiment_name())
    runs = [_ship(mlflow_server, sink, params={"seed": seed}) for seed in (0, 1)]
    c = client(mlflow_server.url)
    names = [find_run(c, r.run_id).info.run_name for r in runs]
    assert names == ["ppo-cartpole-seed0", "ppo-cartpole-seed1"]


def test_declared_score_wins_over_episode_returns(mlflow_server: MlflowServer) -> None:
    """A run that logs ``score`` keeps it; the mean of episode returns is the default."""
    sink = MlflowSink(mlflow_server.url, experiment_name(), score_episodes=2)
    with rlobs.Hub([sink], heartbeat_s=0) as hub:
        with hub.run("a") as plain:
            for reward in (1.0, 2.0, 4.0):
                plain.step(reward, done=True)
        with hub.run("b") as declared:
            declared.step(1.0, done=True)
            declared.log_summary({"score": 42.0})
    assert hub.flush(60)
    c = client(mlflow_server.url)
    assert find_run(c, plain.run_id).data.metrics["score"] == 3.0  # mean of the last 2
    assert find_run(c, declared.run_id).data.metrics["score"] == 42.0


def test_system_metrics_under_mlflows_own_names(mlflow_server: MlflowServer) -> None:
    """Samples arrive as ``system/…`` metrics, which MLflow's System metrics tab shows."""
    import time

    sink = MlflowSink(mlflow_server.url, experiment_name())
    with rlobs.Hub([sink], heartbeat_s=0, system_metrics_s=0.2) as hub, \
            hub.run("sys") as run:
        run.step(1.0)
        time.sleep(1.0)
    assert hub.flush(60)
    c = client(mlflow_server.url)
    found = find_run(c, run.run_id)
    history = c.get_metric_history(found.info.run_id, "system/cpu_utilization_percentage")
    assert len(history) >= 2
    assert "system/system_memory_usage_megabytes" in found.data.metrics
