"""The SB3 callback with the MLflow sink on a real ``mlflow server``: the callback names
the MLflow run, which holds what SB3 recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow_support import client, experiment_name, poll
from servers import MlflowServer
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import rlobs
from rlobs.integrations.sb3 import RlobsCallback
from sinks.jsonl import JsonlSink
from sinks.mlflow import MlflowSink, embedded_uri

pytestmark = pytest.mark.slow


def _tiny_ppo(n_envs: int = 1) -> PPO:
    return PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=n_envs, seed=0), n_steps=64,
               batch_size=64, n_epochs=1, seed=0, device="cpu",
               policy_kwargs={"net_arch": [16]})


def test_callback_names_its_mlflow_run(mlflow_server: MlflowServer) -> None:
    """callback.mlflow_run_id() finds the MLflow run, whose episodes metric is the
    Monitor's episode count and whose approx_kl history has a value at each SB3 dump."""
    runs = mlflow_server.workdir / "runs"
    sink = MlflowSink(mlflow_server.url, experiment_name(), jsonl_dir=runs)
    model = _tiny_ppo(n_envs=2)
    with rlobs.Hub([JsonlSink(runs), sink], heartbeat_s=0) as hub:
        callback = RlobsCallback(hub=hub)
        model.learn(512, callback=callback)
        assert hub.flush(60)
    found = callback.mlflow_run_id(tracking_uri=mlflow_server.url, timeout_s=60)
    assert found is not None
    c = client(mlflow_server.url)
    run = poll(lambda: (r := c.get_run(found)) and r.info.status == "FINISHED" and r)
    assert run.data.tags["rlobs.run_id"] == callback.run_id
    assert "rlobs.mlflow.gaps" not in run.data.tags  # records n_envs apart are no gaps
    assert run.data.metrics["episodes"] == len(model.ep_info_buffer) > 10
    kl = c.get_metric_history(found, "train/approx_kl")
    # SB3 dumps train/* from round 2 on, at num_timesteps 256, 384, 512 (the summary
    # value, logged at the run's end, follows)
    assert sorted(m.step for m in kl)[:3] == [255, 383, 511]


def test_the_callback_finds_its_run_in_the_embedded_store(
        runs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``RLOBS_SINKS=jsonl,mlflow`` and no tracking URI (the README's default),
    ``mlflow_run_id()`` looks where the shipper writes, the log directory's store, and
    leaves the working directory as it was (no store of MLflow's own default there)."""
    monkeypatch.setenv("RLOBS_SINKS", "jsonl,mlflow")
    monkeypatch.chdir(tmp_path)
    with rlobs.Hub.from_env() as hub:
        callback = RlobsCallback(hub=hub)
        _tiny_ppo().learn(128, callback=callback)
    found = callback.mlflow_run_id(timeout_s=60)
    assert found is not None
    run = client(embedded_uri(runs_dir)).get_run(found)
    assert run.data.tags["rlobs.run_id"] == callback.run_id
    assert sorted(p.name for p in tmp_path.iterdir()) == [runs_dir.name]


def test_without_an_mlflow_sink_there_is_no_mlflow_run_to_find(
        runs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub that records to the log only has no MLflow run: ``None``, without looking
    in (and so creating) a store anywhere."""
    monkeypatch.setenv("RLOBS_SINKS", "jsonl")
    monkeypatch.chdir(tmp_path)
    with rlobs.Hub.from_env() as hub:
        callback = RlobsCallback(hub=hub)
        _tiny_ppo().learn(64, callback=callback)
    assert callback.run_id is not None
    assert callback.mlflow_run_id(timeout_s=1) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [runs_dir.name]
    assert not (runs_dir / "mlflow.db").exists()
