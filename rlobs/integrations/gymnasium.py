"""Gymnasium wrappers: every env step becomes a step of the current run.

``env = RecordEpisodes(gym.make("CartPole-v1"))`` and nothing else changes: inside
``with rlobs.run(...)`` each ``env.step`` records the reward, ``terminated`` (as
``done``) and ``truncated``; the run computes the episode return and length on the step
that ends the episode. Outside any run the wrapper records nothing.

Vector envs (``SyncVectorEnv``, ``AsyncVectorEnv``, ``gym.make_vec``) take
:class:`RecordVectorEpisodes`: one step per vector step, per-env episode figures as
metrics (see :mod:`rlobs.integrations._vector`).

Rewards are recorded **raw**: when the wrapped chain holds a wrapper that changes
rewards (``NormalizeReward``, ``TransformReward``, ``ClipReward``, any ``RewardWrapper``
or ``VectorRewardWrapper``), the wrapper reads the reward beneath the innermost of them
(it inserts a pass-through reader there) and tags the run ``rlobs.reward`` with what it
read beneath, so step rewards and episode returns are the env's own.

Importing this module imports gymnasium (and numpy); ``import rlobs`` does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium.wrappers import NormalizeReward
from gymnasium.wrappers.vector import NormalizeReward as VectorNormalizeReward

from .._log import logger
from .._run import Run, current_run
from ._vector import VectorEpisodes

_REWARD_CHANGERS = (gymnasium.RewardWrapper, NormalizeReward)
_VECTOR_REWARD_CHANGERS = (gymnasium.vector.VectorRewardWrapper, VectorNormalizeReward)


class _RunLookup:
    """The explicit run, else the current one; warns once when there is none."""

    def __init__(self, run: Run | None) -> None:
        self.run = run
        self.unrecorded = 0

    def get(self) -> Run | None:
        run = self.run or current_run()
        if run is None:
            self.unrecorded += 1
            if self.unrecorded == 1:
                logger.info("env step outside any run: not recorded (enter a run first)")
        return run


def _info_metrics(info: dict[str, Any], keys: Sequence[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in keys:
        value = info.get(key)
        if value is not None:
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                continue
    return out


class _RawReward(gymnasium.Wrapper):  # type: ignore[type-arg]
    """Passes steps through and keeps the last reward (beneath reward-changing wrappers)."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        self.reward: Any = None

    def step(self, action: Any) -> Any:
        result = self.env.step(action)
        self.reward = result[1]
        return result


class _RawVectorReward(gymnasium.vector.VectorWrapper):
    """The vector form of :class:`_RawReward`."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        self.reward: Any = None

    def step(self, actions: Any) -> Any:
        result = self.env.step(actions)
        self.reward = result[1]
        return result


def _tap_raw_reward(env: Any, changers: tuple[type, ...], tap: type) -> tuple[Any, str | None]:
    """Insert ``tap`` beneath the innermost reward-changing wrapper of ``env``'s chain.

    Returns:
        The tap (``None`` when nothing changes rewards) and the changers' names.
    """
    innermost: Any = None
    names: list[str] = []
    node = env
    while node is not None:
        if isinstance(node, changers):
            innermost = node
            names.append(type(node).__name__)
        node = getattr(node, "env", None)
    if innermost is None:
        return None, None
    if isinstance(innermost.env, tap):  # already tapped by another recorder
        return innermost.env, ", ".join(names)
    innermost.env = tap(innermost.env)
    return innermost.env, ", ".join(names)


def _raw_tag(names: str) -> dict[str, str]:
    return {"rlobs.reward": f"raw (read beneath {names})"}


class RecordEpisodes(gymnasium.Wrapper):  # type: ignore[type-arg]
    """Records each step of a single env into a run.

    Args:
        env: the env to wrap.
        run: the run to record into; default :func:`rlobs.current_run` at each step.
        info_keys: numeric ``info`` entries recorded as step metrics.
        span: when set, each ``env.step`` is also timed as a span of that name.

    A ``reset()`` in the middle of an episode does not end it in the run: the next
    episode's return then includes the abandoned steps (end episodes with
    ``terminated``/``truncated`` for exact figures).
    """

    def __init__(self, env: gymnasium.Env[Any, Any], run: Run | None = None, *,
                 info_keys: Sequence[str] = (), span: str | None = None) -> None:
        super().__init__(env)
        self._lookup = _RunLookup(run)
        self._info_keys = tuple(info_keys)
        self._span = span
        self._raw, self._changers = _tap_raw_reward(env, _REWARD_CHANGERS, _RawReward)
        self._announced: Run | None = None

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        run = self._lookup.get()
        if run is None:
            return self.env.step(action)
        if self._span is None:
            obs, reward, terminated, truncated, info = self.env.step(action)
        else:
            with run.span(self._span):
                obs, reward, terminated, truncated, info = self.env.step(action)
        metrics = _info_metrics(info, self._info_keys) if self._info_keys else None
        recorded: Any = reward
        if self._raw is not None:
            recorded = self._raw.reward
            if run is not self._announced:
                run.set_tags(_raw_tag(self._changers or ""))
                self._announced = run
        run.step(recorded, metrics, done=bool(terminated), truncated=bool(truncated))
        return obs, reward, terminated, truncated, info


class RecordVectorEpisodes(gymnasium.vector.VectorWrapper):
    """Records a vector env into one run: one step per vector step.

    The step's reward is the mean over the sub-envs that made a real transition (with
    the default ``NEXT_STEP`` autoreset, a sub-env's reset step is left out). Sub-envs
    that end an episode add ``episode_return``/``episode_length`` (mean of those that
    ended), ``episodes_ended`` and ``env/<i>/episode_return``/``env/<i>/episode_length``
    to that step's metrics, and count in ``RunEnd.episodes``. ``n_envs`` is added to the
    run's params once.

    Args:
        env: the vector env to wrap.
        run: the run to record into; default :func:`rlobs.current_run` at each step.
        per_env_metrics: record the ``env/<i>/...`` metrics.
        span: when set, each vector ``step`` is also timed as a span of that name.
    """

    def __init__(self, env: gymnasium.vector.VectorEnv[Any, Any, Any], run: Run | None = None,
                 *, per_env_metrics: bool = True, span: str | None = None) -> None:
        super().__init__(env)
        self._lookup = _RunLookup(run)
        self._span = span
        self.episodes = VectorEpisodes(self.num_envs, per_env_metrics=per_env_metrics)
        mode = getattr(env, "metadata", {}).get("autoreset_mode")
        self._next_step_reset = mode is None or str(getattr(mode, "value", mode)) == "NextStep"
        self._resetting: Any = None  # sub-envs whose next step only resets them
        self._announced: Run | None = None
        self._raw, self._changers = _tap_raw_reward(env, _VECTOR_REWARD_CHANGERS,
                                                    _RawVectorReward)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._resetting = None
        self.episodes = VectorEpisodes(self.num_envs,
                                       per_env_metrics=self.episodes.per_env_metrics)
        return self.env.reset(**kwargs)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        run = self._lookup.get()
        if run is None:
            return self.env.step(actions)
        if run is not self._announced:
            self._announce(run)
        if self._span is None:
            obs, rewards, terminated, truncated, info = self.env.step(actions)
        else:
            with run.span(self._span, n_envs=self.num_envs):
                obs, rewards, terminated, truncated, info = self.env.step(actions)
        ended = np.logical_or(terminated, truncated)
        active = None if self._resetting is None else ~self._resetting
        raw = rewards if self._raw is None else self._raw.reward
        reward, metrics, n_ended = self.episodes.update(raw, ended, active)
        if self._next_step_reset:
            self._resetting = ended if n_ended else None
        run.step(reward, metrics, episodes=n_ended)
        return obs, rewards, terminated, truncated, info

    def _announce(self, run: Run) -> None:
        run.log_params({"n_envs": self.num_envs})
        if self._raw is not None:
            run.set_tags(_raw_tag(self._changers or ""))
        self._announced = run
