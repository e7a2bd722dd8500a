"""``rlobs demo``: a small, self-contained agent loop logging to the selected sinks.

A tabular Q-learning agent walks a corridor to a goal. With ``RLOBS_SINKS`` unset it logs
to the JSONL files and, when mlflow is installed, to MLflow's embedded default (a SQLite
file beside the JSONL files): no server needed.
"""

from __future__ import annotations

import argparse
import importlib.util
import random

from ._hub import Hub
from ._registry import registered_sinks, selected_names
from ._run import Run


def demo_sinks() -> list[str]:
    """The environment's sinks; with ``RLOBS_SINKS`` unset, MLflow too when installed."""
    import os

    from . import environment_variables as ev

    names = selected_names()
    if (not os.environ.get(ev.RLOBS_SINKS) and "mlflow" in registered_sinks()
            and "mlflow" not in names and importlib.util.find_spec("mlflow")):
        names.append("mlflow")
    return names


def corridor_agent(run: Run, episodes: int, length: int = 8, seed: int = 0) -> None:
    """Q-learning on a corridor: start left, +1 at the right end, -0.01 per move."""
    rng = random.Random(seed)
    q = [[0.0, 0.0] for _ in range(length)]
    alpha, gamma = 0.5, 0.95
    for episode in range(episodes):
        epsilon = max(0.05, 1.0 - episode / (0.6 * episodes))
        pos = 0
        for t in range(4 * length):
            with run.span("policy.act", epsilon=epsilon):
                explore = rng.random() < epsilon
                action = rng.randrange(2) if explore else int(q[pos][1] >= q[pos][0])
            nxt = min(length - 1, max(0, pos + (1 if action else -1)))
            done = nxt == length - 1
            reward = 1.0 if done else -0.01
            with run.span("learner.update"):
                target = reward + (0.0 if done else gamma * max(q[nxt]))
                td_error = target - q[pos][action]
                q[pos][action] += alpha * td_error
            run.step(reward, {"td_error": td_error, "epsilon": epsilon},
                     done=done, truncated=not done and t == 4 * length - 1)
            pos = nxt
            if done:
                break


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._cli import console, status_table
    from ._reader import read_run

    names = demo_sinks()
    params = {"agent": "q-learning", "episodes": args.episodes,
              "corridor": {"length": 8}, "alpha": 0.5, "gamma": 0.95}
    with Hub(names) as hub:
        with hub.run("demo-corridor", params=params, tags={"example": "demo"},
                     experiment="demo", description="rlobs demo: Q-learning on a corridor",
                     ) as run:
            corridor_agent(run, args.episodes)
        hub.flush()
        healthy = all(s.available and s.errors == 0 for s in hub.status())
        console().print(status_table(hub))
    end = run.result
    assert end is not None
    console().print(f"run {run.run_id}: {end.status.value}, {end.steps} steps, "
                    f"{end.episodes} episodes, total reward {end.total_reward:.3f}")
    for sink in hub.sinks:
        path_for = getattr(sink, "path_for", None)
        if callable(path_for):
            path = path_for(run.run_id)
            console().print(f"run log: {path}  (rlobs show {path})")
            log = read_run(path)
            console().print(f"  {len(log.steps)} steps and {len(log.spans)} spans on disk")
        hint = getattr(sink, "viewer_hint", None)
        if callable(hint):
            console().print(hint())
            if sink.name == "mlflow":
                console().print("  then open experiment 'demo': it shows its runs (the "
                                "run's charts, and its System metrics tab)")
    return 0 if healthy else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``rlobs demo``."""
    parser = sub.add_parser("demo", help="run a small agent loop logging to the selected "
                            "sinks (default: JSONL + MLflow on a local SQLite file)")
    parser.add_argument("--episodes", type=int, default=60)
    parser.set_defaults(func=_cmd_demo)
