"""The SB3 callback with the MLflow sink on a real ``mlflow server``: the callback names
the MLflow run, which holds what SB3 recorded."""

from __future__ import annotations

import pytest
from mlflow_support import client, experiment_name, poll
from servers import MlflowServer
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import rlobs
from rlobs.integrations.sb3 import RlobsCallback
from sinks.jsonl import JsonlSink
from sinks.mlflow import MlflowSink

pytestmark = pytest.mark.slow


def test_callback_names_its_mlflow_run(mlflow_server: MlflowServer) -> None:
    """callback.mlflow_run_id() finds the MLflow run, whose episodes metric is the
    Monitor's episode count and whose approx_kl history has a value at each SB3 dump."""
    runs = mlflow_server.workdir / "runs"
    sink = MlflowSink(mlflow_server.url, experiment_name(), jsonl_dir=runs)
    model = PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), n_steps=64,
                batch_size=64, n_epochs=1, seed=0, device="cpu",
                policy_kwargs={"net_arch": [16]})
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
