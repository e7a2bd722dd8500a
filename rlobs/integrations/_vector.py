"""Per-env episode bookkeeping for vector envs, shared by the Gymnasium and SB3 hooks.

A vector env advances ``n`` sub-envs at once, but a run has one step counter and one
episode accumulator. rlobs records **one step per vector step** whose reward is the mean
over the sub-envs that made a real transition, and keeps each sub-env's episode return
and length here (numpy arrays: the per-env work is vectorised, so 1,024 sub-envs cost
about what 8 do). When sub-envs end episodes, that step carries:

- ``episode_return`` / ``episode_length``: the mean over the sub-envs that ended,
- ``episodes_ended``: how many ended (also passed to ``run.step(episodes=…)``, so
  ``RunEnd.episodes`` counts them),
- ``env/<i>/episode_return`` / ``env/<i>/episode_length``: each one's own figures.

``rlobs compare``, ``rlobs plot`` and the console read the per-env keys as episodes.

Importing this module imports numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


class VectorEpisodes:
    """Running episode returns and lengths of ``n`` sub-envs."""

    def __init__(self, n: int, *, per_env_metrics: bool = True) -> None:
        self.n = n
        self.per_env_metrics = per_env_metrics
        self.returns = np.zeros(n, dtype=np.float64)
        self.lengths = np.zeros(n, dtype=np.int64)
        self.episodes = 0

    def update(self, rewards: Any, ended: Any, active: Any = None,
               finished: Mapping[int, tuple[float, int]] | None = None,
               ) -> tuple[float, dict[str, float], int]:
        """Account one vector step.

        Args:
            rewards: each sub-env's reward (an array or a sequence).
            ended: each sub-env's ``terminated or truncated``.
            active: which sub-envs made a real transition (``False`` for a sub-env that
                only auto-reset this step); default all.
            finished: episode figures known from elsewhere (SB3's ``Monitor``), by env
                index; they replace the running ones of those envs.

        Returns:
            The step's reward (mean over active sub-envs, 0 if none), its metrics, and
            how many episodes ended.
        """
        reward = np.asarray(rewards, dtype=np.float64).reshape(-1)
        done = np.asarray(ended, dtype=bool).reshape(-1)
        if active is None:
            count = self.n
            total = float(reward.sum())
            self.returns += reward
            self.lengths += 1
        else:
            live = np.asarray(active, dtype=bool).reshape(-1)
            count = int(live.sum())
            reward = np.where(live, reward, 0.0)
            total = float(reward.sum())
            self.returns += reward
            self.lengths += live
            done = done & live
        mean = total / count if count else 0.0
        if not done.any():
            return mean, {}, 0
        return mean, self._ends(np.flatnonzero(done), finished), int(done.sum())

    def _ends(self, index: Any, finished: Mapping[int, tuple[float, int]] | None,
              ) -> dict[str, float]:
        """The metrics of the sub-envs at ``index`` ending their episodes; resets them."""
        returns = self.returns[index]
        lengths = self.lengths[index].astype(np.float64)
        if finished:
            for k, i in enumerate(index.tolist()):
                if i in finished:
                    returns[k], lengths[k] = finished[i]
        self.returns[index] = 0.0
        self.lengths[index] = 0
        n = len(index)
        self.episodes += n
        metrics: dict[str, float] = {}
        if self.per_env_metrics:
            for i, ret, length in zip(index.tolist(), returns.tolist(), lengths.tolist(),
                                      strict=True):
                metrics[f"env/{i}/episode_return"] = ret
                metrics[f"env/{i}/episode_length"] = length
        metrics["episode_return"] = float(returns.sum()) / n
        metrics["episode_length"] = float(lengths.sum()) / n
        metrics["episodes_ended"] = float(n)
        return metrics
