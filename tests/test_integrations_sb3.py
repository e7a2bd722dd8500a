"""The Stable-Baselines3 callback against real SB3: params, the values SB3's logger dumps,
Monitor episodes, saving callbacks, vector envs, VecNormalize, resume and failures."""

from __future__ import annotations

import csv
import gc
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.callbacks import (
    BaseCallback,
    CallbackList,
    CheckpointCallback,
    EvalCallback,
)
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import KVWriter, Logger, configure
from stable_baselines3.common.vec_env import SubprocVecEnv, VecNormalize

import rlobs
from rlobs import Hub, RunEnd, RunStart, RunStatus, RunUpdate, Step
from rlobs.integrations.sb3 import RlobsCallback
from rlobs.testing import RecordingSink


@pytest.fixture
def hub_sink() -> Iterator[tuple[Hub, RecordingSink]]:
    sink = RecordingSink()
    with Hub([sink], heartbeat_s=0, handle_signals=False, provenance=False) as hub:
        yield hub, sink


def _ppo(env: Any = "CartPole-v1", n_envs: int = 2, **kwargs: Any) -> PPO:
    vec = make_vec_env(env, n_envs=n_envs, seed=0, **kwargs)
    return PPO("MlpPolicy", vec, n_steps=64, batch_size=64, n_epochs=1, seed=0,
               device="cpu", policy_kwargs={"net_arch": [16]})


def _dqn(n_envs: int = 2, **kwargs: Any) -> DQN:
    vec = make_vec_env("CartPole-v1", n_envs=n_envs, seed=0, **kwargs)
    return DQN("MlpPolicy", vec, learning_starts=100, buffer_size=2_000, batch_size=32,
               train_freq=4, target_update_interval=200, seed=0, device="cpu")


def _summary(sink: RecordingSink) -> dict[str, float]:
    return {k: v for u in sink.of_type(RunUpdate) for k, v in u.metrics.items()}


def _tags(sink: RecordingSink) -> dict[str, str]:
    out = dict(sink.of_type(RunStart)[0].tags)
    for update in sink.of_type(RunUpdate):
        out.update(update.tags)
    return out


def test_training_opens_a_run_with_hyperparameters(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """The run starts with the model's hyperparameters as params."""
    hub, sink = hub_sink
    _ppo().learn(128, callback=RlobsCallback(hub=hub))
    start = sink.of_type(RunStart)[0]
    assert start.name == "sb3-ppo"
    assert (start.params["algo"], start.params["gamma"], start.params["n_steps"],
            start.params["n_envs"], start.params["step_axis"]) == ("PPO", 0.99, 64, 2,
                                                                    "timesteps")
    assert start.params["policy_kwargs.net_arch"] == [16]  # the user's, over the default
    assert start.params["policy_kwargs.activation_fn"] == "Tanh"  # SB3's default


def test_off_policy_params_are_readable(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """DQN's TrainFreq reads as SB3's own input form; the default net_arch is recorded."""
    hub, sink = hub_sink
    model = _dqn()
    model.learn(8, callback=RlobsCallback(hub=hub))
    params = sink.of_type(RunStart)[0].params
    assert params["train_freq"] == [4, "step"]
    assert params["policy_kwargs.net_arch"] == model.policy.net_arch == [64, 64]
    assert params["policy_kwargs.optimizer_class"] == "Adam"
    assert params["env_id"] == "CartPole-v1"


def test_steps_are_on_sb3s_timestep_axis(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """By default a vector step's index is num_timesteps - 1, so the run counts SB3's
    timesteps; step_axis="vector_steps" gives one index per vector step."""
    hub, sink = hub_sink
    model = _ppo()
    model.learn(256, callback=RlobsCallback(hub=hub))
    steps, end = sink.of_type(Step), sink.of_type(RunEnd)[0]
    assert end.status is RunStatus.FINISHED
    assert end.steps == model.num_timesteps == 256
    assert [s.step for s in steps] == list(range(1, 256, 2))
    assert {s.env_steps for s in steps} == {2}

    model.learn(128, callback=RlobsCallback(hub=hub, step_axis="vector_steps"))
    second = [s for s in sink.of_type(Step) if s.run_id == sink.of_type(RunEnd)[1].run_id]
    assert [s.step for s in second] == list(range(64))


def test_every_dump_lands_on_its_step(hub_sink: tuple[Hub, RecordingSink],
                                      tmp_path: Path) -> None:
    """Each row SB3's own CSV logger wrote is on the step at num_timesteps - 1, the last
    one included, train/approx_kl (a numpy float) too; the summary is the last row."""
    hub, sink = hub_sink
    model = _ppo()
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(512, callback=RlobsCallback(hub=hub))
    model.logger.close()
    with open(tmp_path / "progress.csv", newline="") as f:
        rows = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]
    assert len(rows) == 4 and "train/approx_kl" in rows[-1]
    by_index = {s.step: s.metrics for s in sink.of_type(Step)}
    for row in rows:
        metrics = by_index[int(row["time/total_timesteps"]) - 1]
        assert {k: pytest.approx(v) for k, v in row.items()} == {k: metrics[k] for k in row}
    summary = _summary(sink)
    assert {k: summary[k] for k in rows[-1]} == pytest.approx(rows[-1])
    assert sink.of_type(RunEnd)[0].rejected == 0



class _Lives(gym.Wrapper):  # type: ignore[type-arg]
    """Loses a "life" every 5 steps, as Atari's EpisodicLifeEnv: a ``done`` outside the
    Monitor, which SB3 counts as an episode (and dumps on) and the Monitor does not."""

    def __init__(self, env: gym.Env) -> None:  # type: ignore[type-arg]
        super().__init__(env)
        self.steps, self.over, self.last = 0, True, None

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        self.over, self.last = terminated or truncated, obs
        return obs, reward, terminated or self.steps % 5 == 0, truncated, info

    def reset(self, **kwargs: Any) -> Any:
        if self.over:
            return self.env.reset(**kwargs)
        return self.last, {}


def test_off_policy_dumps_land_on_their_step_with_dones_the_monitor_does_not_see(
        hub_sink: tuple[Hub, RecordingSink], tmp_path: Path) -> None:
    """DQN dumps at every log_interval-th done, lost lives included: each row SB3's CSV
    logger wrote is on the step at num_timesteps - 1."""
    hub, sink = hub_sink
    model = _dqn(n_envs=1, wrapper_class=_Lives)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(300, callback=RlobsCallback(hub=hub), log_interval=1)
    model.logger.close()
    with open(tmp_path / "progress.csv", newline="") as f:
        rows = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]
    episodes = sink.of_type(RunEnd)[0].episodes
    assert len(rows) > 2 * max(episodes, 1)  # most dumps were at lost lives
    by_index = {s.step: s.metrics for s in sink.of_type(Step)}
    for row in rows:
        metrics = by_index[int(row["time/total_timesteps"]) - 1]
        assert metrics.get("time/episodes") == row["time/episodes"]

class _OwnLoop(PPO):
    """An algorithm of its own: its rollout loop keeps none of SB3's locals (no
    ``n_steps``), so the callback cannot tell when it dumps; it dumps every 6 timesteps,
    mid-rollout, and takes random actions (no training: the loop is what is tested)."""

    def collect_rollouts(self, env: Any, callback: BaseCallback, rollout_buffer: Any,
                         n_rollout_steps: int) -> bool:
        callback.on_rollout_start()
        for _ in range(n_rollout_steps):
            actions = np.array([env.action_space.sample() for _ in range(env.num_envs)])
            _, rewards, dones, infos = env.step(actions)
            self.num_timesteps += env.num_envs
            callback.update_locals({"rewards": rewards, "dones": dones, "infos": infos})
            if not callback.on_step():
                return False
            if self.num_timesteps % 6 == 0:
                self.logger.record("own/timesteps", self.num_timesteps)
                self.logger.dump(self.num_timesteps)
        callback.on_rollout_end()
        return True

    def train(self) -> None:
        pass


@pytest.mark.parametrize("n_envs", [1, 2])
def test_an_algorithm_of_its_own_gets_each_dump_on_its_step(
        hub_sink: tuple[Hub, RecordingSink], n_envs: int) -> None:
    """Where SB3's loop variables are missing every step is held for a dump that may
    follow: each value dumped lands on the step it was dumped at, and no step is lost."""
    hub, sink = hub_sink
    model = _OwnLoop("MlpPolicy", make_vec_env("CartPole-v1", n_envs=n_envs, seed=0),
                     n_steps=30, batch_size=30, seed=0, device="cpu")
    model.learn(120, callback=RlobsCallback(hub=hub), log_interval=None)
    steps = sink.of_type(Step)
    assert sum(s.env_steps for s in steps) == model.num_timesteps == 120
    dumped = {s.step: s.metrics["own/timesteps"] for s in steps if "own/timesteps" in s.metrics}
    assert dumped == {t - 1: float(t) for t in range(6, 121, 6)}


class _Scalars(BaseCallback):
    """Logs numpy and torch scalars the way user code does."""

    def _on_step(self) -> bool:
        self.logger.record("custom/f32", np.float32(0.25))
        self.logger.record("custom/i64", np.int64(7))
        self.logger.record("custom/tensor", torch.tensor(1.5))
        return True


def test_numpy_and_torch_scalars_logged_to_sb3_arrive(
        hub_sink: tuple[Hub, RecordingSink]) -> None:
    """np.float32, np.int64 and 0-d tensors recorded in SB3's logger reach the steps."""
    hub, sink = hub_sink
    _ppo().learn(256, callback=CallbackList([RlobsCallback(hub=hub), _Scalars()]))
    dumped = [s.metrics for s in sink.of_type(Step) if "custom/f32" in s.metrics]
    assert len(dumped) == 2
    assert (dumped[0]["custom/f32"], dumped[0]["custom/i64"],
            dumped[0]["custom/tensor"]) == (0.25, 7.0, 1.5)
    assert sink.of_type(RunEnd)[0].rejected == 0


def test_episodes_match_the_monitor_files(hub_sink: tuple[Hub, RecordingSink],
                                          tmp_path: Path) -> None:
    """RunEnd.episodes and the per-env returns are what SB3's Monitor files hold."""
    hub, sink = hub_sink
    model = _ppo(monitor_dir=str(tmp_path))
    model.learn(512, callback=RlobsCallback(hub=hub))
    model.env.close()  # type: ignore[union-attr]  # the Monitor files
    monitored = []
    for path in sorted(tmp_path.glob("*.monitor.csv")):
        with open(path, newline="") as f:
            next(f)  # the Monitor's JSON header line
            monitored += [float(row["r"]) for row in csv.DictReader(f)]
    recorded = [v for s in sink.of_type(Step) for k, v in s.metrics.items()
                if k.endswith("/episode_return")]
    assert len(monitored) > 10
    assert sink.of_type(RunEnd)[0].episodes == len(monitored) == len(model.ep_info_buffer)
    assert sorted(recorded) == sorted(monitored)


def test_saving_callbacks_work_alongside(hub_sink: tuple[Hub, RecordingSink],
                                         tmp_path: Path) -> None:
    """CheckpointCallback and EvalCallback(best_model_save_path) save loadable models
    while the run records; EvalCallback's figures land on steps."""
    hub, sink = hub_sink
    model = _ppo()
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=1)
    callbacks = CallbackList([
        RlobsCallback(hub=hub),
        CheckpointCallback(save_freq=64, save_path=str(tmp_path / "ckpt")),
        EvalCallback(eval_env, eval_freq=64, n_eval_episodes=2,
                     best_model_save_path=str(tmp_path / "best"), verbose=0)])
    model.learn(256, callback=callbacks)
    eval_env.close()
    checkpoints = sorted((tmp_path / "ckpt").glob("*.zip"))
    assert len(checkpoints) == 2 and all(p.stat().st_size > 0 for p in checkpoints)
    loaded = PPO.load(checkpoints[-1], device="cpu")
    assert loaded.num_timesteps == 256
    assert (tmp_path / "best" / "best_model.zip").stat().st_size > 0
    assert sink.of_type(RunEnd)[0].status is RunStatus.FINISHED
    assert any("eval/mean_reward" in s.metrics for s in sink.of_type(Step))


@pytest.mark.slow
def test_subproc_vec_env_with_dqn(hub_sink: tuple[Hub, RecordingSink], tmp_path: Path) -> None:
    """Off-policy DQN on a SubprocVecEnv: episodes are the Monitor's, losses arrive after
    every train, not only at log dumps."""
    hub, sink = hub_sink
    model = _dqn(vec_env_cls=SubprocVecEnv, monitor_dir=str(tmp_path))
    try:
        model.learn(600, callback=RlobsCallback(hub=hub), log_interval=1_000)
    finally:
        model.env.close()  # type: ignore[union-attr]
    steps, end = sink.of_type(Step), sink.of_type(RunEnd)[0]
    monitored = sum(len(p.read_text().splitlines()) - 2 for p in tmp_path.glob("*.csv"))
    assert end.status is RunStatus.FINISHED and end.steps == 600
    assert end.episodes == monitored > 5
    with_loss = [s for s in steps if "train/loss" in s.metrics]
    assert len(with_loss) > 50  # (600 - 100) / (4 x 2) trains; SB3 dumped none of them


def test_vec_normalize_records_raw_rewards(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """Under VecNormalize step rewards are CartPole's own 1.0 and the episode returns add
    up to them; the run says so in a tag."""
    hub, sink = hub_sink
    vec = VecNormalize(make_vec_env("CartPole-v1", n_envs=2, seed=0))
    model = PPO("MlpPolicy", vec, n_steps=64, batch_size=64, n_epochs=1, seed=0,
                device="cpu", policy_kwargs={"net_arch": [16]})
    model.learn(256, callback=RlobsCallback(hub=hub))
    steps = sink.of_type(Step)
    assert {s.reward for s in steps} == {1.0}
    returns = sorted(v for s in steps for k, v in s.metrics.items()
                     if k.endswith("/episode_return"))
    assert returns == sorted(float(e["r"]) for e in model.ep_info_buffer)
    assert "VecNormalize" in _tags(sink)["rlobs.reward"]


def test_reset_num_timesteps_false_continues_the_run(
        hub_sink: tuple[Hub, RecordingSink], runs_dir: Path) -> None:
    """A second learn(reset_num_timesteps=False) resumes the same run where it stopped."""
    with Hub(["jsonl"], heartbeat_s=0, handle_signals=False, provenance=False) as hub:
        model, callback = _ppo(), RlobsCallback(hub=hub)
        model.learn(128, callback=callback)
        first = callback.run_id
        model.learn(128, callback=callback, reset_num_timesteps=False)
        assert callback.run_id == first and model.num_timesteps == 256
    log = rlobs.read_run(runs_dir / f"{first}.jsonl")
    lines = [json.loads(x) for x in (runs_dir / f"{first}.jsonl").read_text().splitlines()]
    assert [x["resumed_at"] for x in lines if x["type"] == "run_start"] == [None, 128]
    assert [s.step for s in log.steps] == list(range(1, 256, 2))
    assert log.end is not None and log.end.steps == 256


def test_callback_tells_where_the_run_went(hub_sink: tuple[Hub, RecordingSink],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """callback.run_id names the run after learn(); verbose=1 prints one line saying
    where it goes, and one with how it ended."""
    hub, sink = hub_sink
    callback = RlobsCallback(hub=hub, verbose=1)
    _ppo().learn(128, callback=callback)
    assert callback.run_id == sink.of_type(RunStart)[0].run_id
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("rlobs:")] == [
        f"rlobs: recording run 'sb3-ppo' ({callback.run_id}) to recording; log (none)",
        f"rlobs: run 'sb3-ppo' ({callback.run_id}) ended finished"]
    _ppo().learn(64, callback=RlobsCallback(hub=hub))  # verbose 0: nothing printed
    assert "rlobs:" not in capsys.readouterr().out


class _FailsOnce(BaseCallback):
    """Raises in _on_training_start the first time (a later callback in the list)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def _on_training_start(self) -> None:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("bad callback")

    def _on_step(self) -> bool:
        return True


def test_exception_outside_the_loop_then_retry(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """A later callback raising in _on_training_start: the retry in the same process
    ends the stale run failed and records into a new one; nothing is left current."""
    hub, sink = hub_sink
    model = _ppo()
    callbacks = CallbackList([RlobsCallback(hub=hub), _FailsOnce()])
    with pytest.raises(RuntimeError, match="bad callback"):
        model.learn(128, callback=callbacks)
    model.learn(128, callback=callbacks)
    first, second = sink.of_type(RunEnd)
    assert first.status is RunStatus.FAILED and first.steps == 0
    assert second.status is RunStatus.FINISHED and second.steps == 128
    assert first.run_id != second.run_id and rlobs.current_run() is None


class _BrokenWriter(KVWriter):
    def write(self, key_values: Any, key_excluded: Any, step: int = 0) -> None:
        raise OSError("disk full")


def test_a_log_output_raising_then_a_new_callback(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """A KVWriter raising during a dump, then a retry with a new callback and model (the
    old ones dropped): the stale run ends failed, the new one records alone."""
    hub, sink = hub_sink
    model = _ppo()
    model.set_logger(Logger(None, []))
    model.logger.output_formats.append(_BrokenWriter())
    with pytest.raises(OSError, match="disk full"):
        model.learn(256, callback=RlobsCallback(hub=hub))
    del model
    gc.collect()  # the failed callback and model are dropped: their run is still found
    retry = _ppo()
    retry.learn(128, callback=RlobsCallback(hub=hub))
    first, second = sink.of_type(RunEnd)
    assert first.status is RunStatus.FAILED and first.steps == 128
    assert second.status is RunStatus.FINISHED and second.steps == 128


def test_inside_a_run_the_callback_records_into_it(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """Within ``with hub.run(...)`` the callback uses that run and leaves its end to it."""
    hub, sink = hub_sink
    with hub.run("outer") as run:
        _ppo().learn(128, callback=RlobsCallback())
        assert run.active and run.steps == 128
    assert len(sink.of_type(RunStart)) == 1
    assert any(u.params.get("algo") == "PPO" for u in sink.of_type(RunUpdate))


def test_off_policy_sac_is_recorded(hub_sink: tuple[Hub, RecordingSink]) -> None:
    """An off-policy algorithm (SAC) records its steps, hyperparameters and end too."""
    hub, sink = hub_sink
    model = SAC("MlpPolicy", "Pendulum-v1", learning_starts=50, batch_size=32, seed=0,
                device="cpu", policy_kwargs={"net_arch": [16]})
    model.learn(120, callback=RlobsCallback(hub=hub))
    start, end = sink.of_type(RunStart)[0], sink.of_type(RunEnd)[0]
    assert (start.params["algo"], start.params["tau"], start.params["learning_starts"]) == (
        "SAC", 0.005, 50)
    assert end.status is RunStatus.FINISHED and end.steps == 120



def _spans_per_action(model: Any, callback: RlobsCallback) -> None:
    """Record a span around each action the model takes, naming the timestep it acts at
    (what an instrumented actor does, e.g. ``rlobs.torch.instrument(model.policy)``)."""
    name = "forward" if isinstance(model, PPO) else "_sample_action"
    owner = model.policy if isinstance(model, PPO) else model
    act = getattr(owner, name)

    def traced(*args: Any, **kwargs: Any) -> Any:
        assert callback.run is not None
        with callback.run.span("act", at=model.num_timesteps):
            return act(*args, **kwargs)
    setattr(owner, name, traced)


@pytest.mark.parametrize("algo", ["ppo-1", "ppo-2", "dqn", "sac"])
def test_a_span_recorded_while_acting_lands_on_the_step_it_acts_for(
        hub_sink: tuple[Hub, RecordingSink], algo: str) -> None:
    """The action of env step k is taken before step k is recorded: its spans belong to
    step k (a trace shows them under it), however SB3 dumps its logs around them."""
    hub, sink = hub_sink
    if algo == "sac":
        model: Any = SAC("MlpPolicy", "Pendulum-v1", learning_starts=20, batch_size=16,
                         seed=0, device="cpu", policy_kwargs={"net_arch": [16]})
    else:
        model = _dqn() if algo == "dqn" else _ppo(n_envs=int(algo[-1]))
    callback = RlobsCallback(hub=hub)
    _spans_per_action(model, callback)
    model.learn(160, callback=callback, log_interval=1)
    spans = [s for s in sink.of_type(rlobs.Span) if s.name == "act"]
    # a vector step's record stands for the env steps num_timesteps passes over
    covered = {i for s in sink.of_type(Step) for i in range(s.step - s.env_steps + 1,
                                                            s.step + 1)}
    assert len(spans) >= 160 // model.n_envs
    for span in spans:
        # the first env step of the record that follows it: num_timesteps as it acts
        assert span.step == span.attributes["at"] and span.step in covered, span

_CRASHING = """
import gymnasium as gym
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from rlobs.integrations.sb3 import RlobsCallback

class Exploding(gym.Wrapper):
    calls = 0
    def step(self, action):
        Exploding.calls += 1
        if Exploding.calls == 40:
            raise RuntimeError("simulator crashed")
        return self.env.step(action)

env = make_vec_env(lambda: Exploding(gym.make("CartPole-v1")), n_envs=2, seed=0)
PPO("MlpPolicy", env, n_steps=64, device="cpu").learn(256, callback=RlobsCallback())
"""


@pytest.mark.slow
def test_uncaught_exception_ends_the_run_failed(runs_dir: Path) -> None:
    """A script dying of an exception in learn() leaves a run ended failed, with the
    error, not killed."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_CRASHING)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "simulator crashed" in done.stderr
    (path,) = runs_dir.glob("*.jsonl")
    end = rlobs.read_run(path).end
    assert end is not None and end.status is RunStatus.FAILED
    assert "simulator crashed" in (end.error or "") and end.steps == 38


_INTERRUPTED = """
import os, signal
# A launcher without job control (a background CI step) starts us with SIGINT ignored;
# a script run from a terminal has Python's KeyboardInterrupt handler.
signal.signal(signal.SIGINT, signal.default_int_handler)
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from rlobs.integrations.sb3 import RlobsCallback

class CtrlC(BaseCallback):
    def _on_step(self):
        if self.num_timesteps == 80:
            os.kill(os.getpid(), signal.SIGINT)
        return True

model = PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), n_steps=64,
            device="cpu")
try:
    model.learn(1024, callback=[RlobsCallback(), CtrlC()])
except KeyboardInterrupt:  # stop training, keep the model: the usual training script
    print("interrupted at", model.num_timesteps)
model.save(os.environ["MODEL_PATH"])
"""


@pytest.mark.slow
def test_ctrl_c_the_script_catches_ends_the_run_killed(runs_dir: Path, tmp_path: Path) -> None:
    """A Ctrl-C (a real SIGINT) that the training script catches around learn() to save
    its model ends the run killed, saying so, not failed; the script goes on and saves."""
    env = {**os.environ, "MODEL_PATH": str(tmp_path / "model"),
           "RLOBS_HANDLE_SIGNALS": "1"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_INTERRUPTED)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "interrupted at 80" in done.stdout and (tmp_path / "model.zip").exists()
    (path,) = runs_dir.glob("*.jsonl")
    end = rlobs.read_run(path).end
    assert end is not None and end.status is RunStatus.KILLED
    assert "interrupted by SIGINT" in (end.error or "") and end.steps == 80
