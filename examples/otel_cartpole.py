"""A CartPole agent traced with OpenTelemetry: run → step → actor/env spans.

Point it at any OTLP receiver with the standard variables, e.g. MLflow::

    export OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://localhost:5000/v1/traces
    export OTEL_EXPORTER_OTLP_HEADERS=x-mlflow-experiment-id=1
    RLOBS_SINKS=jsonl,otel python examples/otel_cartpole.py --episodes 2

(``docs/otel.md`` shows Jaeger and Phoenix too.) Needs ``gymnasium`` and ``torch``.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import torch

import rlobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    actor = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.Tanh(), torch.nn.Linear(64, 2))
    env = gym.make("CartPole-v1")
    with torch.no_grad():  # warm up: the first call's one-off cost is not the agent's
        actor(torch.zeros(1, 4))
    params = {"env": "CartPole-v1", "actor": {"hidden": 64}, "seed": args.seed}
    with rlobs.run("cartpole-demo", params=params) as run:
        for episode in range(args.episodes):
            obs, _ = env.reset(seed=args.seed + episode)
            done = False
            while not done:
                with run.span("actor.forward", batch=1), torch.no_grad():
                    logits = actor(torch.as_tensor(obs).unsqueeze(0))
                    action = int(torch.distributions.Categorical(logits=logits).sample())
                with run.span("env.step"):
                    obs, reward, terminated, truncated, _ = env.step(action)
                done = terminated or truncated
                run.step(float(reward), {"logit_gap": float(logits[0, 1] - logits[0, 0])},
                         done=terminated, truncated=truncated)
        run.log_summary({"mean_return": run.total_reward / args.episodes})
    env.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
