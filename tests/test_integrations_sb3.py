"""The Stable-Baselines3 callback: params, SB3's own metrics, and the end status."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from rlobs import Hub, RunEnd, RunStart, RunStatus, RunUpdate, Step
from rlobs.integrations.sb3 import RlobsCallback
from rlobs.testing import RecordingSink


@pytest.fixture
def hub_sink() -> Iterator[tuple[Hub, RecordingSink]]:
    sink = RecordingSink()
    with Hub([sink], heartbeat_s=0, handle_signals=False, provenance=False) as hub:
        yield hub, sink


def _ppo(env: Any = "CartPole-v1") -> PPO:
    vec = make_vec_env(env, n_envs=2, seed=0)
    return PPO("MlpPolicy", vec, n_steps=64, batch_size=64, n_epochs=1, seed=0,
               device="cpu", policy_kwargs={"net_arch": [16]})


def test_training_opens_a_run_with_hyperparameters(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """The run starts with the model's hyperparameters as params."""
    hub, sink = hub_sink
    _ppo().learn(128, callback=RlobsCallback(hub=hub))
    start = sink.of_type(RunStart)[0]
    assert start.name == "sb3-ppo"
    assert (start.params["algo"], start.params["gamma"], start.params["n_steps"],
            start.params["n_envs"]) == ("PPO", 0.99, 64, 2)


def test_training_records_one_step_per_vector_step(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """Every vector env step is one run step; the run ends finished."""
    hub, sink = hub_sink
    model = _ppo()
    model.learn(256, callback=RlobsCallback(hub=hub))
    end = sink.of_type(RunEnd)[0]
    assert end.status is RunStatus.FINISHED
    assert end.steps == model.num_timesteps // 2 == len(sink.of_type(Step))


def test_sb3_metrics_reach_the_steps(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """What SB3 logs (rollout/ep_rew_mean, time/fps, train losses) lands on steps or the
    summary."""
    hub, sink = hub_sink
    _ppo().learn(384, callback=RlobsCallback(hub=hub))  # train metrics dump after round 2
    keys = {k for s in sink.of_type(Step) for k in s.metrics}
    assert {"rollout/ep_rew_mean", "time/fps", "train/value_loss"} <= keys
    summary = {k for u in sink.of_type(RunUpdate) for k in u.metrics}
    assert {"train/loss", "rollout/ep_rew_mean"} <= summary


def test_episode_returns_come_from_the_monitor(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """Per-env episode returns equal what SB3's Monitor recorded."""
    hub, sink = hub_sink
    model = _ppo()
    model.learn(256, callback=RlobsCallback(hub=hub))
    recorded = sorted(v for s in sink.of_type(Step) for k, v in s.metrics.items()
                      if k.startswith("env/") and k.endswith("/episode_return"))
    monitor = sorted(float(info["r"]) for info in model.ep_info_buffer)
    assert 0 < len(monitor) < 100  # the buffer keeps the last 100: here it holds them all
    assert recorded == monitor


class _Exploding(gym.Wrapper):  # type: ignore[type-arg]
    """Raises on its 40th step."""

    def __init__(self, env: gym.Env) -> None:  # type: ignore[type-arg]
        super().__init__(env)
        self.calls = 0

    def step(self, action: Any) -> Any:
        self.calls += 1
        if self.calls == 40:
            raise RuntimeError("simulator crashed")
        return self.env.step(action)


def test_learn_raising_ends_the_run_failed(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """An exception inside learn() ends the run failed and still propagates."""
    hub, sink = hub_sink
    model = _ppo(lambda: _Exploding(gym.make("CartPole-v1")))
    with pytest.raises(RuntimeError, match="simulator crashed"):
        model.learn(256, callback=RlobsCallback(hub=hub))
    end = sink.of_type(RunEnd)[0]
    assert end.status is RunStatus.FAILED and "simulator crashed" in (end.error or "")
    assert "collect_rollouts" not in vars(model)  # the model is left as it was


def test_inside_a_run_the_callback_records_into_it(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """Within ``with hub.run(...)`` the callback uses that run and leaves its end to it."""
    hub, sink = hub_sink
    with hub.run("outer") as run:
        _ppo().learn(128, callback=RlobsCallback())
        assert run.active and run.steps == 64
    assert len(sink.of_type(RunStart)) == 1
    assert any(u.params.get("algo") == "PPO" for u in sink.of_type(RunUpdate))


def test_off_policy_sac_is_recorded(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """An off-policy algorithm (SAC) records its steps, hyperparameters and end too."""
    from stable_baselines3 import SAC

    hub, sink = hub_sink
    model = SAC("MlpPolicy", "Pendulum-v1", learning_starts=50, batch_size=32, seed=0,
                device="cpu", policy_kwargs={"net_arch": [16]})
    model.learn(120, callback=RlobsCallback(hub=hub))
    start, end = sink.of_type(RunStart)[0], sink.of_type(RunEnd)[0]
    assert (start.params["algo"], start.params["tau"], start.params["learning_starts"]) == (
        "SAC", 0.005, 50)
    assert end.status is RunStatus.FINISHED and end.steps == 120
