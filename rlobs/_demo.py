"""``rlobs demo``: a small, self-contained agent loop logging to the selected sinks.

A tabular Q-learning agent walks a corridor to a goal. With ``RLOBS_SINKS`` unset it logs
to the JSONL files and, when mlflow is installed, to MLflow's embedded default (a SQLite
file beside the JSONL files): no server needed.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import shutil
import sys
from pathlib import Path

from rich.console import Console

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


def runnable(command: str) -> str:
    """``command`` as it runs from here: when this Python is a virtualenv's that is not
    activated, its first word is the venv's own executable (``.venv/bin/mlflow ...``)."""
    word, _, rest = command.partition(" ")
    exe = Path(sys.executable).parent / word
    if sys.prefix == sys.base_prefix or not exe.is_file():
        return command
    found = shutil.which(word)
    if found and Path(found).absolute() == exe.absolute():
        return command  # the venv is activated: the bare word is this very program
    try:
        shown = str(exe.absolute().relative_to(Path.cwd()))
    except ValueError:
        shown = str(exe)
    return f"{shown} {rest}".rstrip()


def _out() -> Console:
    """Standard output; off a terminal, wide enough that no path or command is cut."""
    from ._cli import console

    out = console()
    if out.is_terminal:
        return out
    return Console(file=out.file, width=240, soft_wrap=True, highlight=False)


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._cli import shipped_counts, status_table
    from ._reader import read_run

    out = _out()
    names = demo_sinks()
    params = {"agent": "q-learning", "episodes": args.episodes,
              "corridor": {"length": 8}, "alpha": 0.5, "gamma": 0.95}
    with Hub(names) as hub:
        with hub.run("demo-corridor", params=params, tags={"example": "demo"},
                     experiment="demo", description="rlobs demo: Q-learning on a corridor",
                     ) as run:
            corridor_agent(run, args.episodes)
        # Wait for the shipper (a fresh SQLite store takes seconds to create its tables),
        # so that MLflow has the run when the hints below say so.
        shipped = hub.flush(args.wait)
        healthy = shipped and all(s.available and s.errors == 0 for s in hub.status())
        directory = run.log_path.parent if run.log_path else None
        out.print(status_table(hub, shipped=shipped_counts(directory) if directory else None))
    end = run.result
    assert end is not None
    out.print(f"run {run.run_id}: {end.status.value}, {end.steps} steps, "
              f"{end.episodes} episodes, total reward {end.total_reward:.3f}")
    if not shipped:
        out.print(f"[yellow]the shipper has not delivered everything after {args.wait:g} s: "
                  f"{runnable('rlobs status')} shows what is left[/yellow]")
    for sink in hub.sinks:
        path_for = getattr(sink, "path_for", None)
        if callable(path_for):
            path = path_for(run.run_id)
            out.print(f"run log: {path}  ({runnable(f'rlobs show {path}')})")
            log = read_run(path)
            out.print(f"  {len(log.steps)} steps and {len(log.spans)} spans on disk")
        hint = getattr(sink, "viewer_hint", None)
        if callable(hint):
            out.print(runnable(str(hint())))
            if sink.name == "mlflow":
                out.print("  then open experiment 'demo': it shows its runs (the "
                          "run's charts, and its System metrics tab)")
    return 0 if healthy else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``rlobs demo``."""
    parser = sub.add_parser("demo", help="run a small agent loop logging to the selected "
                            "sinks (default: JSONL + MLflow on a local SQLite file)")
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--wait", type=float, default=120.0, metavar="SECONDS",
                        help="longest wait for the shipper to deliver the run (default 120)")
    parser.set_defaults(func=_cmd_demo)
