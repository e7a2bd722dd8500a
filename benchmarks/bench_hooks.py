"""What the Gymnasium wrappers and the console sink cost the agent's thread.

Two tables, each against its bare env measured in the same run (interleaved trials,
medians): per env step of one CartPole, and per vector step of a ``SyncVectorEnv`` of
``--n-envs`` CartPoles (default 1,024) under ``RecordVectorEpisodes``, the bare and
wrapped vector envs taking turns of ``--chunk`` steps (with the median of paired ratios).

    PYTHONPATH=. python benchmarks/bench_hooks.py [--steps 20000] [--trials 5]
        [--n-envs 1024] [--rounds 40] [--chunk 10]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

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


def vector_chunk(env: gym.vector.VectorEnv, actions: np.ndarray, steps: int) -> float:  # type: ignore[type-arg]
    """µs per vector step over ``steps`` steps of a fixed-action loop (auto-reset)."""
    start = time.perf_counter_ns()
    for t in range(steps):
        env.step(actions ^ (t & 1))
    return (time.perf_counter_ns() - start) / steps / 1e3


class Timed(gym.vector.VectorWrapper):
    """Adds up the time spent in the env it wraps (the hook's own time is the rest)."""

    def __init__(self, env: gym.vector.VectorEnv) -> None:  # type: ignore[type-arg]
        super().__init__(env)
        self.inner_ns = 0

    def step(self, actions: Any) -> Any:
        start = time.perf_counter_ns()
        try:
            return self.env.step(actions)
        finally:
            self.inner_ns += time.perf_counter_ns() - start


def hook_own_us(n_envs: int, steps: int, directory: str) -> float:
    """µs per vector step that RecordVectorEpisodes spends outside the env's own step."""
    timed = Timed(gym.make_vec("CartPole-v1", num_envs=n_envs, vectorization_mode="sync"))
    env = RecordVectorEpisodes(timed)
    actions = np.arange(n_envs) & 1
    with Hub(["jsonl"], heartbeat_s=0, handle_signals=False, provenance=False,
             env={"RLOBS_JSONL_DIR": directory}) as hub, hub.run("bench"):
        env.reset(seed=0)
        start = time.perf_counter_ns()
        for t in range(steps):
            env.step(actions ^ (t & 1))
        total = time.perf_counter_ns() - start
    env.close()
    return (total - timed.inner_ns) / steps / 1e3


def vector_trials(n_envs: int, rounds: int, chunk: int, directory: str
                  ) -> dict[str, list[float]]:
    """Bare and wrapped vector envs side by side, ``chunk`` steps each in turn, so load
    from other jobs falls on every case alike."""
    make = lambda: gym.make_vec("CartPole-v1", num_envs=n_envs,  # noqa: E731
                                vectorization_mode="sync")
    cases: dict[str, gym.vector.VectorEnv] = {  # type: ignore[type-arg]
        f"SyncVectorEnv x{n_envs} (baseline)": make(),
        "RecordVectorEpisodes, jsonl": RecordVectorEpisodes(make()),
        "RecordVectorEpisodes, jsonl, per_env_metrics=False": RecordVectorEpisodes(
            make(), per_env_metrics=False),
    }
    actions = np.arange(n_envs) & 1
    out: dict[str, list[float]] = {name: [] for name in cases}
    with Hub(["jsonl"], heartbeat_s=0, handle_signals=False, provenance=False,
             env={"RLOBS_JSONL_DIR": directory}) as hub, hub.run("bench"):
        for env in cases.values():
            env.reset(seed=0)
        for _ in range(rounds):
            for name, env in cases.items():
                out[name].append(vector_chunk(env, actions, chunk))
    for env in cases.values():
        env.close()
    return out


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
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--chunk", type=int, default=10)
    args = parser.parse_args()
    results: dict[str, list[float]] = {name: [] for name in CASES}
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(args.trials):
            for name, case in CASES.items():
                results[name].append(case(args.steps, directory))
        vector = vector_trials(args.n_envs, args.rounds, args.chunk, directory)
    table(f"CartPole-v1, {args.steps:,} steps x {args.trials} trials, median µs/step",
          "µs/step", results)
    table(f"SyncVectorEnv of {args.n_envs:,} CartPole-v1, {args.rounds} rounds of "
          f"{args.chunk} vector steps per case, median µs per vector step",
          "µs/vector step", vector)
    base = next(iter(vector.values()))
    for name, values in list(vector.items())[1:]:
        paired = statistics.median(v / b for v, b in zip(values, base, strict=True))
        print(f"{name}: median of paired ratios to the baseline {paired:.3f}")
    with tempfile.TemporaryDirectory() as directory:
        own = [hook_own_us(args.n_envs, args.rounds * args.chunk // 4, directory)
               for _ in range(args.trials)]
    print(f"RecordVectorEpisodes' own work (outside the env's step), jsonl: median "
          f"{statistics.median(own):.1f} µs per vector step = "
          f"{statistics.median(own) / statistics.median(base):.2%} of the bare step")


if __name__ == "__main__":
    main()
