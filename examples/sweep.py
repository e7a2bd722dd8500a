"""A parameter sweep: one parent run, one child run per grid cell (``parent=``).

Each cell trains an epsilon-greedy agent on a 5-armed bandit. In MLflow the cells are
nested under the sweep; in a trace they are linked to it; in JSONL each child's
``run_start`` carries the parent's id.

    python examples/sweep.py
"""

from __future__ import annotations

import itertools
import random

import rlobs

ARMS = (0.1, 0.3, 0.5, 0.7, 0.9)
GRID = {"epsilon": (0.01, 0.1, 0.3), "step_size": (0.05, 0.2)}


def bandit(run: rlobs.Run, epsilon: float, step_size: float, seed: int,
           steps: int = 500) -> float:
    """Epsilon-greedy on Bernoulli arms; returns the mean reward of the last 100 pulls."""
    rng = random.Random(seed)
    values = [0.0] * len(ARMS)
    recent: list[float] = []
    for t in range(steps):
        if rng.random() < epsilon:
            arm = rng.randrange(len(ARMS))
        else:
            arm = max(range(len(ARMS)), key=values.__getitem__)
        reward = 1.0 if rng.random() < ARMS[arm] else 0.0
        values[arm] += step_size * (reward - values[arm])
        run.step(reward, {"arm": arm}, done=(t % 100 == 99))
        recent = ([*recent, reward])[-100:]
    return sum(recent) / len(recent)


def main() -> None:
    cells = [dict(zip(GRID, values, strict=True)) for values in itertools.product(*GRID.values())]
    with rlobs.run("sweep-bandit", params={"grid": GRID, "cells": len(cells)}) as sweep:
        scores = {}
        for index, cell in enumerate(cells):
            with rlobs.run(f"sweep-bandit-cell{index}", params=cell, parent=sweep) as child:
                scores[index] = bandit(child, cell["epsilon"], cell["step_size"], seed=index)
                child.log_summary({"final_mean_reward": scores[index]})
        best = max(scores, key=scores.__getitem__)
        sweep.log_summary({"best_final_mean_reward": scores[best]})
        sweep.set_tags({"best_cell": str(cells[best])})
    print(f"sweep {sweep.run_id}: best cell {cells[best]} -> {scores[best]:.3f}")


if __name__ == "__main__":
    main()
