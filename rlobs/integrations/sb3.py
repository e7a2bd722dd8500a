"""Stable-Baselines3: a callback that records training into a run.

``model.learn(10_000, callback=RlobsCallback())`` opens a run when training starts (its
params are the model's hyperparameters), records one step per vector env step (see
:mod:`rlobs.integrations._vector`), adds the metrics SB3 already computes
(``rollout/ep_rew_mean``, ``train/loss``, ``time/fps``, …) to the next step each time
SB3 dumps its logs, and ends the run when training ends: ``finished``, or ``failed`` /
``killed`` when ``learn()`` raises (the callback wraps the model's ``collect_rollouts``
and ``train`` for the duration of ``learn()`` to see the exception; it re-raises it
untouched).

Importing this module imports stable_baselines3; ``import rlobs`` does not.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter

from .._hub import Hub, default_hub
from .._run import Run, current_run
from ._vector import VectorEpisodes

HYPERPARAMETERS = (
    "learning_rate", "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda",
    "clip_range", "clip_range_vf", "normalize_advantage", "ent_coef", "vf_coef",
    "max_grad_norm", "use_sde", "sde_sample_freq", "target_kl", "buffer_size",
    "learning_starts", "tau", "train_freq", "gradient_steps", "target_update_interval",
    "target_entropy", "exploration_fraction", "exploration_initial_eps",
    "exploration_final_eps", "seed", "device", "n_envs", "policy_kwargs",
)
"""Model attributes recorded as params when present."""

_WRAPPED = ("collect_rollouts", "train")


def hyperparameters(model: Any) -> dict[str, Any]:
    """The model's hyperparameters as params (schedules as their starting value)."""
    params: dict[str, Any] = {"algo": type(model).__name__,
                              "policy": type(getattr(model, "policy", None)).__name__}
    for name in HYPERPARAMETERS:
        if not hasattr(model, name):
            continue
        value = getattr(model, name)
        if callable(value):  # an SB3 schedule: progress 1.0 is the start of training
            try:
                value = value(1.0)
            except Exception:
                value = repr(value)
        if not isinstance(value, bool | int | float | str | Mapping | type(None)):
            value = str(value)
        params[name] = value
    env = getattr(model, "env", None)
    spec = getattr(env, "spec", None) or _first_spec(env)
    if spec is not None:
        params["env_id"] = getattr(spec, "id", str(spec))
    return params


def _first_spec(env: Any) -> Any:
    try:
        return env.get_attr("spec", [0])[0]
    except Exception:  # not every VecEnv exposes its sub-envs' specs
        return None


class _Collector(KVWriter):
    """An SB3 log output: keeps the numeric values of each dump for the next step."""

    def __init__(self) -> None:
        self.pending: dict[str, float] = {}
        self.latest: dict[str, float] = {}

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any],
              step: int = 0) -> None:
        for key, value in key_values.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.pending[key] = float(value)
        self.latest.update(self.pending)

    def take(self) -> dict[str, float] | None:
        if not self.pending:
            return None
        out, self.pending = self.pending, {}
        return out

    def close(self) -> None:
        pass


class RlobsCallback(BaseCallback):
    """Records an SB3 training run (see the module docstring).

    Args:
        name: the run name; default ``sb3-<algo>``.
        run: record into this run (not ended by the callback); default the current run
            if any, else a new run opened at training start and ended at its end.
        hub: the hub for a new run; default :func:`rlobs.default_hub`.
        params: extra params for a new run.
        tags: tags for a new run.
        per_env_metrics: record ``env/<i>/episode_return`` metrics.
    """

    def __init__(self, name: str | None = None, *, run: Run | None = None,
                 hub: Hub | None = None, params: Mapping[str, Any] | None = None,
                 tags: Mapping[str, Any] | None = None, per_env_metrics: bool = True,
                 verbose: int = 0) -> None:
        super().__init__(verbose)
        self.name = name
        self.hub = hub
        self.extra_params = dict(params or {})
        self.tags = dict(tags or {})
        self.per_env_metrics = per_env_metrics
        self._given = run
        self.run: Run | None = None
        self._owned = False
        self._collector = _Collector()
        self._episodes: VectorEpisodes | None = None

    # ------------------------------------------------------------------ SB3 hooks

    def _on_training_start(self) -> None:
        params = {**hyperparameters(self.model), "n_envs": self.model.n_envs,
                  **self.extra_params}
        existing = self._given or current_run()
        if existing is not None:
            self.run, self._owned = existing, False
            existing.log_params(params)
        else:
            hub = self.hub or default_hub()
            name = self.name or f"sb3-{type(self.model).__name__.lower()}"
            self.run = hub.run(name, params=params, tags=self.tags).__enter__()
            self._owned = True
        self._collector = _Collector()
        self.model.logger.output_formats.append(self._collector)
        self._episodes = VectorEpisodes(self.model.n_envs,
                                        per_env_metrics=self.per_env_metrics)
        self._wrap_model()

    def _on_step(self) -> bool:
        run, episodes = self.run, self._episodes
        if run is None or episodes is None:
            return True
        rewards = self.locals.get("rewards")
        dones = self.locals.get("dones")
        if rewards is None or dones is None:
            return True
        infos = self.locals.get("infos") or [{}] * len(dones)
        finished = {i: (float(info["episode"]["r"]), int(info["episode"]["l"]))
                    for i, info in enumerate(infos) if dones[i] and "episode" in info}
        reward, metrics = episodes.update(rewards, dones, finished=finished)
        logged = self._collector.take()
        if logged:
            metrics.update(logged)
        run.step(reward, metrics)
        return True

    def _on_training_end(self) -> None:
        self._finish(None)

    # ------------------------------------------------------------------ internals

    def _finish(self, exc: BaseException | None) -> None:
        self._unwrap_model()
        run = self.run
        if run is None:
            return
        self.run = None
        # The user may have replaced or closed the logger mid-training.
        with contextlib.suppress(ValueError, AttributeError):
            self.model.logger.output_formats.remove(self._collector)
        summary = {**self._collector.latest, **_numeric(self.model.logger.name_to_value)}
        if summary:
            run.log_summary(summary)
        if self._owned:
            run.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)

    def _wrap_model(self) -> None:
        for attr in _WRAPPED:
            method = getattr(self.model, attr)
            setattr(self.model, attr, self._guard(method))

    def _unwrap_model(self) -> None:
        for attr in _WRAPPED:
            self.model.__dict__.pop(attr, None)

    def _guard(self, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except BaseException as exc:
                self._finish(exc)
                raise
        return guarded


def _numeric(values: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}

