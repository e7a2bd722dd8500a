"""What the Gymnasium wrappers and the console sink cost the agent's thread.

Two tables, each against its bare env measured in the same run (interleaved trials,
medians): per env step of one CartPole, and per vector step of a ``SyncVectorEnv`` of
``--n-envs`` CartPoles (default 1,024) under ``RecordVectorEpisodes``.

    PYTHONPATH=. python benchmarks/bench_hooks.py [--steps 20000] [--trials 5]
        [--n-envs 1024] [--vector-steps 200]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from rlobs import Hub, Sink
from rlobs.integrations.gymnasium import RecordEpisodes, RecordVectorEpisodes
from sinks.console import ConsoleSink


def loop(env: gym.Env, steps: int) -> float:  # type: ignore[type-arg]
    """µs per step of a fixed-action CartPole loop (resets included)."""
    env.reset(seed=0)
    start = time.perf_counter_ns()
    for t in range(steps):
        _, _, terminated, truncated, _ = env.step(t & 1)
        if terminated or truncated:
            env.reset()
    return (time.perf_counter_ns() - start) / steps / 1e3


def bare(steps: int, directory: str) -> float:
    return loop(gym.make("CartPole-v1"), steps)


def wrapped(sinks: Callable[[], list[object]]) -> Callable[[int, str], float]:
    def measure(steps: int, directory: str) -> float:
        with Hub(sinks(), heartbeat_s=0, handle_signals=False, provenance=False,  # type: ignore[arg-type]
                 env={"RLOBS_JSONL_DIR": directory}) as hub, hub.run("bench"):
            return loop(RecordEpisodes(gym.make("CartPole-v1")), steps)
    return measure


CASES: dict[str, Callable[[int, str], float]] = {
    "bare env (baseline)": bare,
    "RecordEpisodes, no sink": wrapped(list),
    "RecordEpisodes, jsonl": wrapped(lambda: ["jsonl"]),
    "RecordEpisodes, jsonl + a no-op sink": wrapped(lambda: ["jsonl", Sink()]),
    "RecordEpisodes, jsonl + console (live)": wrapped(
        lambda: ["jsonl", ConsoleSink(io.StringIO(), terminal=True, refresh_s=0.0)]),
}


def vector_loop(env: gym.vector.VectorEnv, steps: int) -> float:  # type: ignore[type-arg]
    """µs per vector step of a fixed-action loop (sub-envs auto-reset)."""
    actions = np.arange(env.num_envs) & 1
    env.reset(seed=0)
    start = time.perf_counter_ns()
    for t in range(steps):
        env.step(actions ^ (t & 1))
    return (time.perf_counter_ns() - start) / steps / 1e3


def vector_bare(n_envs: int) -> Callable[[int, str], float]:
    def measure(steps: int, directory: str) -> float:
        return vector_loop(gym.make_vec("CartPole-v1", num_envs=n_envs,
                                        vectorization_mode="sync"), steps)
    return measure


def vector_wrapped(n_envs: int, per_env_metrics: bool) -> Callable[[int, str], float]:
    def measure(steps: int, directory: str) -> float:
        env = gym.make_vec("CartPole-v1", num_envs=n_envs, vectorization_mode="sync")
        with Hub(["jsonl"], heartbeat_s=0, handle_signals=False, provenance=False,
                 env={"RLOBS_JSONL_DIR": directory}) as hub, hub.run("bench"):
            return vector_loop(RecordVectorEpisodes(env, per_env_metrics=per_env_metrics),
                               steps)
    return measure


def table(title: str, unit: str, results: dict[str, list[float]]) -> None:
    base = statistics.median(next(iter(results.values())))
    print(f"{title}\n")
    print(f"| case | {unit} | over bare env | × bare |")
    print("|---|---:|---:|---:|")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {median - base:+.2f} | {median / base:.3f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--n-envs", type=int, default=1024)
    parser.add_argument("--vector-steps", type=int, default=200)
    args = parser.parse_args()
    vector_cases = {
        f"SyncVectorEnv x{args.n_envs} (baseline)": vector_bare(args.n_envs),
        "RecordVectorEpisodes, jsonl": vector_wrapped(args.n_envs, True),
        "RecordVectorEpisodes, jsonl, per_env_metrics=False": vector_wrapped(args.n_envs,
                                                                             False),
    }
    results: dict[str, list[float]] = {name: [] for name in CASES}
    vector: dict[str, list[float]] = {name: [] for name in vector_cases}
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(args.trials):
            for name, case in CASES.items():
                results[name].append(case(args.steps, directory))
            for name, case in vector_cases.items():
                vector[name].append(case(args.vector_steps, directory))
    table(f"CartPole-v1, {args.steps:,} steps x {args.trials} trials, median µs/step",
          "µs/step", results)
    table(f"SyncVectorEnv of {args.n_envs:,} CartPole-v1, {args.vector_steps:,} vector "
          f"steps x {args.trials} trials, median µs per vector step",
          "µs/vector step", vector)


if __name__ == "__main__":
    main()
