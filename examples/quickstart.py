"""The smallest loop: one run, one call per step.

    python examples/quickstart.py          # then: rlobs show rlobs-runs/<id>.jsonl

Sinks come from the environment: ``RLOBS_SINKS=jsonl,mlflow,otel`` (default: the JSONL
file, plus MLflow/OTel when their standard variables are set).
"""

from __future__ import annotations

import random

import rlobs


def main() -> None:
    rng = random.Random(0)
    with rlobs.run("quickstart", params={"epsilon": 0.1, "seed": 0}) as run:
        for step in range(1_000):
            reward = 1.0 if rng.random() > 0.1 else 0.0
            run.step(reward, {"epsilon": 0.1}, done=(step % 100 == 99))
    print(f"run {run.run_id}: {run.steps} steps, {run.episodes} episodes")


if __name__ == "__main__":
    main()
