"""Per-env episode bookkeeping for vector envs, shared by the Gymnasium and SB3 hooks.

A vector env advances ``n`` sub-envs at once, but a run has one step counter and one
episode accumulator. rlobs records **one step per vector step** whose reward is the mean
over the sub-envs that made a real transition, and keeps each sub-env's episode return
and length here. When sub-envs end episodes, that step carries:

- ``episode_return`` / ``episode_length``: the mean over the sub-envs that ended,
- ``episodes_ended``: how many ended,
- ``env/<i>/episode_return`` / ``env/<i>/episode_length``: each one's own figures.

``rlobs compare``, ``rlobs plot`` and the console read the per-env keys as episodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class VectorEpisodes:
    """Running episode returns and lengths of ``n`` sub-envs."""

    def __init__(self, n: int, *, per_env_metrics: bool = True) -> None:
        self.n = n
        self.per_env_metrics = per_env_metrics
        self.returns = [0.0] * n
        self.lengths = [0] * n
        self.episodes = 0

    def update(self, rewards: Sequence[Any], ended: Sequence[Any],
               active: Sequence[bool] | None = None,
               finished: dict[int, tuple[float, int]] | None = None,
               ) -> tuple[float, dict[str, float]]:
        """Account one vector step.

        Args:
            rewards: each sub-env's reward.
            ended: each sub-env's ``terminated or truncated``.
            active: which sub-envs made a real transition (``False`` for a sub-env that
                only auto-reset this step); default all.
            finished: episode figures known from elsewhere (SB3's ``Monitor``), by env
                index; they replace the running ones of those envs.

        Returns:
            The step's reward (mean over active sub-envs, 0 if none) and its metrics.
        """
        total, count = 0.0, 0
        metrics: dict[str, float] = {}
        ends: list[tuple[float, int]] = []
        for i in range(self.n):
            if active is not None and not active[i]:
                continue
            reward = float(rewards[i])
            total += reward
            count += 1
            self.returns[i] += reward
            self.lengths[i] += 1
            if ended[i]:
                ret, length = (finished or {}).get(i, (self.returns[i], self.lengths[i]))
                ends.append((ret, length))
                if self.per_env_metrics:
                    metrics[f"env/{i}/episode_return"] = ret
                    metrics[f"env/{i}/episode_length"] = float(length)
                self.returns[i], self.lengths[i] = 0.0, 0
        if ends:
            self.episodes += len(ends)
            metrics["episode_return"] = sum(r for r, _ in ends) / len(ends)
            metrics["episode_length"] = sum(n for _, n in ends) / len(ends)
            metrics["episodes_ended"] = float(len(ends))
        return (total / count if count else 0.0), metrics
