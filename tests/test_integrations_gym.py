"""The Gymnasium wrappers: single env and vector envs recorded into one run."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import gymnasium as gym
import pytest
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from rlobs import Hub, RunEnd, RunUpdate, Step
from rlobs.integrations.gymnasium import RecordEpisodes, RecordVectorEpisodes
from rlobs.testing import RecordingSink


@pytest.fixture
def hub_sink() -> Iterator[tuple[Hub, RecordingSink]]:
    sink = RecordingSink()
    with Hub([sink], heartbeat_s=0, handle_signals=False, provenance=False) as hub:
        yield hub, sink


def test_import_rlobs_imports_no_integration_library() -> None:
    """``import rlobs.integrations`` pulls in neither gymnasium, numpy nor SB3."""
    code = ("import sys, rlobs, rlobs.integrations; "
            "print(sorted(m for m in ('gymnasium', 'numpy', 'stable_baselines3', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_single_env_records_every_step_and_episode(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """Each env step is a run step; episode ends carry the env's own return and length."""
    hub, sink = hub_sink
    env = RecordEpisodes(gym.make("CartPole-v1"))
    env.action_space.seed(0)
    expected: list[tuple[float, int]] = []
    with hub.run("cartpole"):
        for episode in range(3):
            env.reset(seed=episode)
            total, length, over = 0.0, 0, False
            while not over:
                _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
                total, length = total + float(reward), length + 1
                over = terminated or truncated
            expected.append((total, length))
    steps = sink.of_type(Step)
    assert len(steps) == sum(n for _, n in expected)
    ends = [(s.episode_return, s.episode_length) for s in steps if s.done]
    assert ends == expected
    assert sink.of_type(RunEnd)[0].episodes == 3


def test_truncation_is_recorded_as_truncated(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """A time-limit cut-off ends the episode as ``truncated``, not ``done``."""
    hub, sink = hub_sink
    env = RecordEpisodes(gym.make("CartPole-v1", max_episode_steps=3))
    with hub.run("short"):
        env.reset(seed=1)
        for _ in range(3):
            env.step(0 if _ % 2 else 1)
    last = sink.of_type(Step)[-1]
    assert (last.truncated, last.done, last.episode_length) == (True, False, 3)


def test_steps_outside_a_run_are_not_recorded(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """Without a current run the wrapper only passes steps through."""
    _, sink = hub_sink
    env = RecordEpisodes(gym.make("CartPole-v1"))
    env.reset(seed=0)
    obs, *_ = env.step(0)
    assert obs.shape == (4,) and sink.of_type(Step) == []


def test_explicit_run_and_info_metrics(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """An explicit run is used without entering it; numeric info keys become metrics."""
    hub, sink = hub_sink

    class Info(gym.Wrapper):  # type: ignore[type-arg]
        def step(self, action):  # type: ignore[no-untyped-def]
            obs, r, te, tr, info = self.env.step(action)
            return obs, r, te, tr, {**info, "cost": 0.5, "label": "x"}

    run = hub.run("explicit").start()
    env = RecordEpisodes(Info(gym.make("CartPole-v1")), run, info_keys=("cost", "label"))
    env.reset(seed=0)
    env.step(1)
    run.end()
    assert sink.of_type(Step)[0].metrics == {"cost": 0.5}


def _vector_returns(env: gym.vector.VectorEnv, steps: int) -> list[tuple[int, float]]:  # type: ignore[type-arg]
    """Run ``steps`` vector steps; (env index, return) of every episode the env reported."""
    env.action_space.seed(3)
    env.reset(seed=3)
    seen = []
    for _ in range(steps):
        _, _, _, _, info = env.step(env.action_space.sample())
        if "episode" in info:
            seen += [(i, float(info["episode"]["r"][i]))
                     for i in range(env.num_envs) if info["_episode"][i]]
    return seen


def _recorded_returns(steps: list[Step]) -> list[tuple[int, float]]:
    out = []
    for s in steps:
        for key, value in s.metrics.items():
            if key.endswith("/episode_return"):
                out.append((int(key.split("/")[1]), value))
    return out


def test_sync_vector_env_per_env_episodes(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """SyncVectorEnv: one step per vector step; each sub-env's episodes match gymnasium's."""
    hub, sink = hub_sink
    inner = RecordEpisodeStatistics(gym.make_vec("CartPole-v1", num_envs=3,
                                                 vectorization_mode="sync"))
    with hub.run("vec"):
        truth = _vector_returns(RecordVectorEpisodes(inner), 120)
    steps = sink.of_type(Step)
    assert len(steps) == 120
    assert len(truth) > 3 and sorted(_recorded_returns(steps)) == sorted(truth)


def test_vector_step_reward_is_mean_of_real_transitions(
        hub_sink: tuple[Hub, RecordingSink]) -> None:
    """Sub-envs that only auto-reset on a step are left out of that step's mean reward."""
    hub, sink = hub_sink
    env = RecordVectorEpisodes(gym.make_vec("CartPole-v1", num_envs=2, max_episode_steps=2,
                                            vectorization_mode="sync"))
    with hub.run("vec"):
        env.reset(seed=0)
        for _ in range(3):
            env.step([0, 0])
    steps = sink.of_type(Step)
    # step 2 ends both episodes; step 3 is the auto-reset step of both: no real transition
    assert [s.reward for s in steps] == [1.0, 1.0, 0.0]
    assert steps[1].metrics["episodes_ended"] == 2.0
    assert steps[1].metrics["episode_length"] == 2.0


def test_async_vector_env_per_env_episodes(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """AsyncVectorEnv (worker processes) lands per-env episodes in the same one run."""
    hub, sink = hub_sink
    vec = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="async",
                       vector_kwargs={"context": "spawn"})
    inner = RecordEpisodeStatistics(vec)
    try:
        with hub.run("vec-async"):
            truth = _vector_returns(RecordVectorEpisodes(inner), 80)
    finally:
        inner.close()
    assert len(truth) > 1 and sorted(_recorded_returns(sink.of_type(Step))) == sorted(truth)


def test_vector_episodes_count_in_the_run_end(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """RunEnd.episodes equals the episodes gymnasium's own statistics saw end."""
    hub, sink = hub_sink
    inner = RecordEpisodeStatistics(gym.make_vec("CartPole-v1", num_envs=4,
                                                 vectorization_mode="sync"))
    with hub.run("vec") as run:
        truth = _vector_returns(RecordVectorEpisodes(inner), 150)
        assert run.episodes == len(truth)
    assert len(truth) > 10 and sink.of_type(RunEnd)[0].episodes == len(truth)


def _normalised_returns(env: gym.Env) -> list[float]:  # type: ignore[type-arg]
    env.reset(seed=5)
    returns, total = [], 0.0
    for t in range(300):
        _, reward, terminated, truncated, _ = env.step(t % 2)
        total += float(reward)
        if terminated or truncated:
            returns.append(total)
            total = 0.0
            env.reset()
    return returns


def test_single_env_records_raw_rewards_under_normalize_reward(
        hub_sink: tuple[Hub, RecordingSink]) -> None:
    """Beneath NormalizeReward the env pays 1.0 per CartPole step: that is what is recorded,
    and the run says so in a tag; the agent still gets the normalised reward."""
    hub, sink = hub_sink
    stats = gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1"))
    env = RecordEpisodes(gym.wrappers.NormalizeReward(stats))
    with hub.run("norm"):
        seen = _normalised_returns(env)
    steps = sink.of_type(Step)
    assert {s.reward for s in steps} == {1.0}
    assert any(abs(r - round(r)) > 1e-6 for r in seen)  # the agent's rewards were scaled
    raw = [float(r) for r in stats.return_queue]
    assert [s.episode_return for s in steps if s.done or s.truncated] == raw
    tags = {k: v for u in sink.of_type(RunUpdate) for k, v in u.tags.items()}
    assert "NormalizeReward" in tags["rlobs.reward"]


def test_vector_env_records_raw_rewards_under_normalize_reward(
        hub_sink: tuple[Hub, RecordingSink]) -> None:
    """The vector NormalizeReward too: per-env returns are the raw ones gymnasium's
    RecordEpisodeStatistics (beneath it) reports."""
    from gymnasium.wrappers.vector import NormalizeReward

    hub, sink = hub_sink
    stats = RecordEpisodeStatistics(gym.make_vec("CartPole-v1", num_envs=3,
                                                 vectorization_mode="sync"))
    with hub.run("vec-norm"):
        env = RecordVectorEpisodes(NormalizeReward(stats))
        env.action_space.seed(3)
        env.reset(seed=3)
        for _ in range(120):
            env.step(env.action_space.sample())
    steps = sink.of_type(Step)
    assert {s.reward for s in steps} <= {0.0, 1.0}
    recorded = sorted(v for _, v in _recorded_returns(steps))
    assert len(recorded) > 3 and recorded == sorted(float(r) for r in stats.return_queue)
    tags = {k: v for u in sink.of_type(RunUpdate) for k, v in u.tags.items()}
    assert "NormalizeReward" in tags["rlobs.reward"]
