"""RLlib: one run per algorithm, its episodes and its training iterations.

``config.callbacks(RlobsRLlibCallback)`` (or ``RlobsRLlibCallback.configured(name=...)``):

- the run opens when the algorithm is built (``on_algorithm_init``, in the algorithm's
  process), its params the algorithm's config (scalars only), and ends when the
  algorithm stops (``algo.stop()``): ``finished``; ``failed`` if ``train()`` raised;
- each episode is one step: its return as the step's reward, ``done`` set, its length
  in env steps as metric ``episode_env_steps`` (the episode is sampled by an EnvRunner,
  perhaps remote; it reaches the algorithm through RLlib's own metrics, under
  ``env_runners/rlobs_episodes``, an item series);
- each training iteration's results (numbers only, nested keys joined with ``/``) are
  the metrics of that iteration's last episode step, or of a step of their own when no
  episode ended in it. The rlobs episode count and returns are RLlib's episodes.

Under Ray Tune the algorithm's run nests under the trial's parent if
``RLOBS_PARENT_ID`` is set in the algorithm's environment
(:func:`rlobs.integrations.ray.worker_env`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback

from .. import environment_variables as ev
from .._hub import default_hub
from .._log import logger
from .._run import Run, status_for
from ._ray_tune import result_metrics

EPISODES_KEY = "rlobs_episodes"
"""The metrics key under which EnvRunners hand each episode's (return, length) over."""
_SCALARS = (bool, int, float, str)


class RlobsRLlibCallback(RLlibCallback):
    """Logs an RLlib algorithm as one run (module docstring).

    Configure a name, params or tags with :meth:`configured`; RLlib builds the callback
    itself, in the algorithm's process and in every EnvRunner.
    """

    run_name: str | None = None
    extra_params: Mapping[str, Any] = {}
    extra_tags: Mapping[str, Any] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run: Run | None = None
        self.errors = 0

    @classmethod
    def configured(cls, name: str | None = None, *, params: Mapping[str, Any] | None = None,
                   tags: Mapping[str, Any] | None = None) -> type[RlobsRLlibCallback]:
        """A subclass with this run name, params and tags, for ``config.callbacks(...)``."""
        attrs = {"run_name": name, "extra_params": dict(params or {}),
                 "extra_tags": dict(tags or {}), "__module__": __name__}
        return type("RlobsRLlibCallback", (cls,), attrs)

    # ------------------------------------------------------------------ RLlib's hooks

    def on_algorithm_init(self, *, algorithm: Any, metrics_logger: Any = None,
                          **kwargs: Any) -> None:
        """Open the algorithm's run; end it when the algorithm stops or training fails."""
        try:
            self._open(algorithm)
        except Exception as exc:
            self._failed("on_algorithm_init", exc)

    def on_episode_end(self, *, episode: Any, prev_episode_chunks: list[Any] | None = None,
                       metrics_logger: Any = None, **kwargs: Any) -> None:
        """Hand the episode's return and length to the algorithm (RLlib's metrics)."""
        try:
            chunks = [episode, *(prev_episode_chunks or [])]
            ret = float(sum(float(c.get_return()) for c in chunks))
            length = int(sum(int(c.env_steps()) for c in chunks))
            if metrics_logger is not None:
                metrics_logger.log_value(EPISODES_KEY, (ret, length), reduce="item_series")
        except Exception as exc:
            self._failed("on_episode_end", exc)

    def on_train_result(self, *, algorithm: Any, metrics_logger: Any = None,
                        result: dict[str, Any], **kwargs: Any) -> None:
        """Record the iteration: a step per episode, the results on the last one."""
        try:
            self._record(result)
        except Exception as exc:
            self._failed("on_train_result", exc)

    # ------------------------------------------------------------------ internals

    def _open(self, algorithm: Any) -> None:
        config = getattr(algorithm, "config", None)
        params = _config_params(config)
        env_id = params.get("env")
        name = self.run_name or "-".join(str(p) for p in (type(algorithm).__name__, env_id)
                                          if p)
        tags = {"ray.rllib.algorithm": type(algorithm).__name__, **self.extra_tags}
        parent = os.environ.get(ev.RLOBS_PARENT_ID) or None
        run = default_hub().run(name, params={**params, **self.extra_params}, tags=tags,
                                parent=parent)
        self.run = run.start()
        _wrap(algorithm, "train", lambda exc: run.end(*status_for(exc)))
        _wrap(algorithm, "stop", lambda exc: run.end(*status_for(exc)), always=True)

    def _record(self, result: dict[str, Any]) -> None:
        run = self.run
        if run is None:
            return
        runners = result.get("env_runners")
        episodes = runners.pop(EPISODES_KEY, None) if isinstance(runners, dict) else None
        metrics = result_metrics(result)
        episodes = list(episodes or [])
        for i, (ret, length) in enumerate(episodes):
            last = i == len(episodes) - 1
            extra = metrics if last else {}
            run.step(float(ret), {**extra, "episode_env_steps": float(length)}, done=True)
        if not episodes:
            run.step(0.0, metrics)

    def _failed(self, hook: str, exc: Exception) -> None:
        self.errors += 1
        if self.errors & (self.errors - 1) == 0:
            logger.warning("rllib callback failed", hook=hook,
                           error=f"{type(exc).__name__}: {exc}", errors=self.errors)


def _config_params(config: Any) -> dict[str, Any]:
    """The algorithm config's scalar settings (RLlib's config holds classes and callables)."""
    try:
        raw = config.to_dict() if config is not None else {}
    except Exception:
        return {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, _SCALARS) or value is None:
            out[str(key)] = value
        elif key == "env" and value is not None:
            out["env"] = getattr(value, "__name__", str(value))
    return out


def _wrap(algorithm: Any, method: str, done: Callable[[BaseException | None], Any], *,
          always: bool = False) -> None:
    """Call ``done`` when ``algorithm.<method>`` raises (or, with ``always``, returns)."""
    inner = getattr(algorithm, method)

    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            out = inner(*args, **kwargs)
        except BaseException as exc:
            done(exc)
            raise
        if always:
            done(None)
        return out

    setattr(algorithm, method, wrapper)
